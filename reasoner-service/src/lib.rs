//! The SLC cloud service. The HTTP layer lands with the cloud-reasoner issue.
