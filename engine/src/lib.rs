//! Model code of the SLC edge: tensors in, tensors out. Knows nothing about HTTP.
