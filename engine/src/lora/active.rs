//! The adapters one loaded model serves, and the one its LoRA slots hold now. Requests name an
//! adapter or a top-K mix (`crate::lora::mix`); switching to a bank adapter is a pointer swap
//! per layer, a mix is averaged once and kept in a small cache of its own.

use super::adapter::{LoraAdapter, adapter_error};
use super::apply::{attach_adapter, detach_adapters, merge_adapter};
use super::bank::AdapterBank;
use super::mix::{AdapterMix, AdapterNameError};
use crate::error::Result;
use crate::lru::ByteLru;
use crate::qwen2_5_vl::Qwen25VlModel;

/// Top-K mixes kept built: a conversation's turns repeat theirs, a new set of concepts rarely
/// does. The cache is bounded by bytes, room for this many mixes of the bank's largest adapter.
pub const KEPT_MIXES: usize = 16;

pub struct ActiveAdapter {
    /// The bank's adapters by meta-concept name, in bank order.
    bank: Vec<(String, LoraAdapter)>,
    bank_names: Vec<String>,
    /// The adapter folded into the weights, if the deployment merged one.
    merged: Option<String>,
    /// Bank adapters that change the vision tower (so its output depends on them).
    vision_adapters: Vec<String>,
    /// Averaged factors of the mixes built so far, by canonical name.
    mixes: ByteLru<String, LoraAdapter>,
    /// What the model's LoRA slots hold; `None` runs the base (or merged) weights.
    attached: Option<AdapterMix>,
}

impl ActiveAdapter {
    /// A model without adapters: every request runs the base weights.
    pub fn base_only() -> Self {
        Self::new(Vec::new(), None)
    }

    /// The bank's adapters, switched per request; with `merge`, its only adapter folded into
    /// `model`'s weights for good instead.
    pub fn from_bank(bank: AdapterBank, model: &mut Qwen25VlModel, merge: bool) -> Result<Self> {
        let mut adapters: Vec<(String, LoraAdapter)> = bank
            .meta_concepts
            .into_iter()
            .map(|meta| (meta.name, meta.adapter))
            .collect();
        if !merge {
            return Ok(Self::from_adapters(adapters));
        }
        if model.is_quantized() {
            return Err(adapter_error(
                &bank.directory,
                "an adapter cannot be merged into a quantized model (--quant): serve it unmerged",
            ));
        }
        if adapters.len() != 1 {
            return Err(adapter_error(
                &bank.directory,
                "merging needs a bank with exactly one adapter",
            ));
        }
        let (name, adapter) = adapters.remove(0);
        merge_adapter(model, &adapter)?;
        Ok(Self::new(Vec::new(), Some(name)))
    }

    /// Named adapters, switched per request (the bank's, or any checked against this model).
    pub fn from_adapters(adapters: Vec<(String, LoraAdapter)>) -> Self {
        Self::new(adapters, None)
    }

    fn new(bank: Vec<(String, LoraAdapter)>, merged: Option<String>) -> Self {
        let vision_adapters = bank
            .iter()
            .filter(|(_, adapter)| adapter.targets_vision())
            .map(|(name, _)| name.clone())
            .collect();
        let largest = bank
            .iter()
            .map(|(_, adapter)| adapter.size_bytes())
            .max()
            .unwrap_or(0);
        ActiveAdapter {
            bank_names: bank.iter().map(|(name, _)| name.clone()).collect(),
            bank,
            merged,
            vision_adapters,
            mixes: ByteLru::new(KEPT_MIXES * largest),
            attached: None,
        }
    }

    /// Every name a request may use alone: the bank's adapters, then the merged one.
    pub fn names(&self) -> Vec<String> {
        self.bank_names
            .iter()
            .cloned()
            .chain(self.merged.clone())
            .collect()
    }

    /// How many averaged mixes are kept built.
    pub fn built_mixes(&self) -> usize {
        self.mixes.len()
    }

    /// The adapter in the LoRA slots now.
    pub fn attached(&self) -> Option<&AdapterMix> {
        self.attached.as_ref()
    }

    /// Whether the attached adapter changes the vision tower's output.
    pub fn attached_changes_vision(&self) -> bool {
        self.attached.as_ref().is_some_and(|mix| {
            mix.members()
                .iter()
                .any(|member| self.vision_adapters.contains(member))
        })
    }

    /// Puts the requested adapter (a name or a top-K mix; `None` or the merged adapter's name:
    /// the weights as loaded) into `model`'s LoRA slots. The name is validated before any
    /// tensor work; a mix not seen recently is averaged once.
    pub fn select(&mut self, model: &mut Qwen25VlModel, requested: Option<&str>) -> Result<()> {
        let wanted = match requested.filter(|name| Some(*name) != self.merged.as_deref()) {
            None => None,
            Some(name) => Some(AdapterMix::parse(name, &self.bank_names)?),
        };
        if wanted == self.attached {
            return Ok(());
        }
        match &wanted {
            None => detach_adapters(model),
            Some(mix) if mix.members().len() == 1 => {
                attach_adapter(model, self.bank_adapters(mix)?[0]);
            }
            Some(mix) => {
                let name = mix.name();
                if let Some(averaged) = self.mixes.get(&name) {
                    attach_adapter(model, averaged);
                } else {
                    let averaged = LoraAdapter::average(&self.bank_adapters(mix)?)?;
                    attach_adapter(model, &averaged);
                    let bytes = averaged.size_bytes();
                    self.mixes.insert(name, averaged, bytes);
                }
            }
        }
        self.attached = wanted;
        Ok(())
    }

    fn bank_adapters(&self, mix: &AdapterMix) -> Result<Vec<&LoraAdapter>> {
        mix.members()
            .iter()
            .map(|member| {
                self.bank
                    .iter()
                    .find(|(name, _)| name == member)
                    .map(|(_, adapter)| adapter)
                    .ok_or_else(|| {
                        AdapterNameError::Unknown {
                            member: member.clone(),
                        }
                        .into()
                    })
            })
            .collect()
    }
}
