//! Adapter names as clients and the Eq. 1 chooser write them: one bank adapter (`bo`) or a
//! top-K mix of several (`bo+dug`, best first). A name is validated once, here, into an
//! [`AdapterMix`]: members deduplicated and sorted (the mix is a mean, so `dug+bo` is the same
//! adapter as `bo+dug`), every member in the bank, and no more members than the bank has.
//! The member bound is checked before the name is even split, so a name that repeats one
//! adapter 200,000 times costs a scan of its bytes, not 200,000 averaged copies.
//!
//! No tch here: the HTTP layer can validate names before a request reaches a worker.

/// Separates the members of a top-K mix in an adapter name (`bo+dug`): concept ids and
/// meta-concept names cannot contain it.
pub const MIX_SEPARATOR: char = '+';

/// The members of an adapter name as written, in order, duplicates included.
pub fn mix_members(name: &str) -> impl Iterator<Item = &str> {
    name.split(MIX_SEPARATOR)
}

/// Why an adapter name does not name adapters of this bank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterNameError {
    #[error("unknown adapter {member:?}")]
    Unknown { member: String },
    #[error(
        "an adapter mix of {members} members, but the bank has {bank} adapters (a mix names each at most once)"
    )]
    TooManyMembers { members: usize, bank: usize },
}

/// A validated adapter name: one bank adapter, or a mix of several.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdapterMix {
    /// Sorted, without duplicates, each a bank adapter's name.
    members: Vec<String>,
}

impl AdapterMix {
    /// Validates `name` against the names of the bank's adapters.
    pub fn parse(name: &str, bank: &[String]) -> Result<Self, AdapterNameError> {
        let members = name.matches(MIX_SEPARATOR).count() + 1;
        if members > bank.len().max(1) {
            return Err(AdapterNameError::TooManyMembers {
                members,
                bank: bank.len(),
            });
        }
        let mut names: Vec<&str> = mix_members(name).collect();
        names.sort_unstable();
        names.dedup();
        if let Some(unknown) = names
            .iter()
            .find(|member| !bank.iter().any(|b| b == *member))
        {
            return Err(AdapterNameError::Unknown {
                member: unknown.to_string(),
            });
        }
        Ok(AdapterMix {
            members: names.into_iter().map(str::to_string).collect(),
        })
    }

    /// The bank adapters it averages (one for a plain adapter), sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The canonical name: the sorted members joined by [`MIX_SEPARATOR`].
    pub fn name(&self) -> String {
        self.members.join(&MIX_SEPARATOR.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> Vec<String> {
        ["bo", "brown-duck", "dug"].map(String::from).to_vec()
    }

    #[test]
    fn names_are_deduplicated_and_sorted_into_one_canonical_mix() {
        let mix = AdapterMix::parse("dug+bo", &bank()).unwrap();
        assert_eq!(mix.members(), ["bo", "dug"]);
        assert_eq!(mix.name(), "bo+dug");
        assert_eq!(AdapterMix::parse("bo+dug", &bank()).unwrap(), mix);
        let single = AdapterMix::parse("dug+dug", &bank()).unwrap();
        assert_eq!(
            (single.members(), single.name()),
            (&["dug".to_string()][..], "dug".into())
        );
        assert_eq!(AdapterMix::parse("bo", &bank()).unwrap().name(), "bo");
    }

    #[test]
    fn unknown_members_and_oversized_mixes_are_refused() {
        assert_eq!(
            AdapterMix::parse("dug+nope", &bank()),
            Err(AdapterNameError::Unknown {
                member: "nope".into()
            })
        );
        assert_eq!(
            AdapterMix::parse("bo++dug", &bank()),
            Err(AdapterNameError::Unknown { member: "".into() })
        );
        assert_eq!(
            AdapterMix::parse("bo", &[]),
            Err(AdapterNameError::Unknown {
                member: "bo".into()
            }),
            "a single name against an empty bank is unknown, not too many"
        );
        assert_eq!(
            AdapterMix::parse("bo+dug+bo+dug", &bank()),
            Err(AdapterNameError::TooManyMembers {
                members: 4,
                bank: 3
            })
        );
        // Issue 14's request: one name repeated 200,000 times.
        let repeated = vec!["dug"; 200_000].join("+");
        assert_eq!(
            AdapterMix::parse(&repeated, &bank()),
            Err(AdapterNameError::TooManyMembers {
                members: 200_000,
                bank: 3
            })
        );
    }
}
