//! Which concepts a turn is about: the request's `concepts`, plus its `scenario`'s members,
//! or, when it names neither, the default rule:
//!
//! 1. the concepts the question mentions as `<id>` (an unregistered one is a 404, as in a list);
//! 2. then those in the conversation's scope (the concepts of its latest turns);
//! 3. then every other registered concept, when there are at most
//!    `SLC_MAX_CONCEPTS_PER_REQUEST` registered. With more, the turn keeps 1 and 2 if they
//!    found any, and is otherwise a 400 that asks the client to name them.

use shared_types::ConceptId;

use crate::error::ApiError;
use crate::registry::{ConceptRecord, ScenarioRecord, ScopedRegistry};
use crate::state::AppState;

/// What a request said about its concepts.
#[derive(Debug, Default)]
pub struct ConceptsAsked<'a> {
    pub concepts: Option<&'a [String]>,
    pub scenario: Option<&'a str>,
    /// The default rule's inputs; `None` where the route needs concepts named (`/v1/detect`).
    pub default_rule: Option<DefaultRule<'a>>,
}

#[derive(Debug)]
pub struct DefaultRule<'a> {
    pub question: &'a str,
    /// The conversation's scope, newest turn first.
    pub scope: &'a [ConceptId],
}

/// The turn's concepts, in order, and the scenario they are exactly the members of (whose
/// cached Eq. 1 choice then applies).
#[derive(Debug)]
pub struct TurnConcepts {
    pub records: Vec<ConceptRecord>,
    pub scenario: Option<ScenarioRecord>,
    /// Whether the default rule chose them.
    pub by_default: bool,
}

pub async fn choose_concepts(
    state: &AppState,
    registry: &ScopedRegistry,
    asked: ConceptsAsked<'_>,
) -> Result<TurnConcepts, ApiError> {
    let scenario = match asked.scenario {
        Some(raw) => Some(load_scenario(registry, raw).await?),
        None => None,
    };
    let (ids, by_default) = match (asked.concepts, &scenario, asked.default_rule) {
        (None, None, Some(rule)) => (default_ids(state, registry, &rule).await?, true),
        (None, None, None) => {
            return Err(ApiError::InvalidRequest(
                "the concept list is empty; name at least one registered concept or a scenario"
                    .into(),
            ));
        }
        (listed, scenario, _) => {
            let mut ids = parse_listed(state, listed.unwrap_or_default())?;
            for member in scenario.iter().flat_map(|scenario| &scenario.members) {
                if !ids.contains(member) {
                    ids.push(member.clone());
                }
            }
            (ids, false)
        }
    };
    check_count(state, ids.len())?;
    let records = registry
        .get_many(&ids)
        .await?
        .map_err(ApiError::UnknownConcepts)?;
    // The scenario's cached choice applies only when the turn is exactly its members.
    let scenario = scenario.filter(|scenario| scenario.members == ids);
    Ok(TurnConcepts {
        records,
        scenario,
        by_default,
    })
}

async fn load_scenario(registry: &ScopedRegistry, raw: &str) -> Result<ScenarioRecord, ApiError> {
    let id = ConceptId::parse(raw)?;
    let scenario = registry
        .scenario(&id)
        .await?
        .ok_or_else(|| ApiError::unknown_scenario(&id))?;
    if scenario.members.is_empty() {
        return Err(ApiError::InvalidRequest(format!(
            "scenario {} has no members left; PUT /v1/scenarios/{} to give it some",
            id.bare(),
            id.bare()
        )));
    }
    Ok(scenario)
}

fn check_count(state: &AppState, count: usize) -> Result<(), ApiError> {
    if count > state.limits.max_concepts_per_request {
        return Err(ApiError::TooMany {
            what: "concepts",
            count,
            max: state.limits.max_concepts_per_request,
        });
    }
    Ok(())
}

/// A request's own list: valid ids, each once, not too many.
pub fn parse_listed(state: &AppState, raw_ids: &[String]) -> Result<Vec<ConceptId>, ApiError> {
    check_count(state, raw_ids.len())?;
    let mut ids = Vec::with_capacity(raw_ids.len());
    for raw in raw_ids {
        let id = ConceptId::parse(raw)?;
        if ids.contains(&id) {
            return Err(ApiError::InvalidRequest(format!(
                "concept {id} is listed twice"
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

async fn default_ids(
    state: &AppState,
    registry: &ScopedRegistry,
    rule: &DefaultRule<'_>,
) -> Result<Vec<ConceptId>, ApiError> {
    let registered = registry.ids().await?;
    let mut ids: Vec<ConceptId> = Vec::new();
    let mut unknown = Vec::new();
    for mentioned in bracketed_mentions(rule.question) {
        if ids.contains(&mentioned) {
            continue;
        }
        if registered.contains(&mentioned) {
            ids.push(mentioned);
        } else if !unknown.contains(&mentioned) {
            unknown.push(mentioned);
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::UnknownConcepts(unknown));
    }
    for id in rule.scope {
        if !ids.contains(id) && registered.contains(id) {
            ids.push(id.clone());
        }
    }
    if registered.len() <= state.limits.max_concepts_per_request {
        for id in registered {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    } else if ids.is_empty() {
        return Err(ApiError::ConceptsRequired(format!(
            "{} concepts are registered, more than the {} one turn may use \
             (SLC_MAX_CONCEPTS_PER_REQUEST); name the turn's concepts with `concepts`, a \
             `scenario`, or `<id>` mentions in the question",
            registered.len(),
            state.limits.max_concepts_per_request
        )));
    }
    Ok(ids)
}

/// The `<id>` tokens of `text` that follow the concept-id rule, in order of first appearance.
pub fn bracketed_mentions(text: &str) -> Vec<ConceptId> {
    let mut found: Vec<ConceptId> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(['>', '<']) else {
            break;
        };
        if rest.as_bytes()[close] == b'>'
            && let Ok(id) = ConceptId::parse_bracketed(&format!("<{}>", &rest[..close]))
            && !found.contains(&id)
        {
            found.push(id);
        }
        rest = &rest[close..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_bracketed_ids_in_order() {
        let ids = |text: &str| -> Vec<String> {
            bracketed_mentions(text)
                .iter()
                .map(|id| id.bare().to_owned())
                .collect()
        };
        assert_eq!(ids("Is <bo> near <mam>? And <bo>?"), ["bo", "mam"]);
        assert_eq!(ids("a <<bo> b"), ["bo"]);
        assert_eq!(ids("no <not an id> and <> or < bo>"), Vec::<String>::new());
        assert_eq!(ids("bo and mam"), Vec::<String>::new());
        assert_eq!(ids("unclosed <bo"), Vec::<String>::new());
    }
}
