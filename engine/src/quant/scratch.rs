//! One reusable bf16 buffer per thread for dequantized weights: a prefill dequantizes each
//! layer in turn, and a fresh 90 MB allocation per layer would pay its page faults every time.
//! Per thread because each worker runs its model on its own thread; the buffer only grows.

use std::cell::RefCell;
use tch::{Device, Kind, Tensor};

thread_local! {
    static SCRATCH: RefCell<Option<Tensor>> = const { RefCell::new(None) };
}

/// Calls `f` with a bf16 CPU tensor of `shape` backed by this thread's scratch buffer. Its
/// contents are whatever the last user left; `f` must not keep it.
pub fn with_scratch<R>(shape: [i64; 2], f: impl FnOnce(&Tensor) -> R) -> R {
    let numel = shape[0] * shape[1];
    SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|t| (t.numel() as i64) < numel) {
            // Drop the old buffer first so the two never coexist.
            *slot = None;
            *slot = Some(Tensor::empty([numel], (Kind::BFloat16, Device::Cpu)));
        }
        let buffer = slot.as_ref().expect("just filled");
        f(&buffer.narrow(0, 0, numel).view(shape))
    })
}
