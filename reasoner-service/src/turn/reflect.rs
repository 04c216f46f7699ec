//! Test-time reflection within a turn: Table 8 questions for every concept reported present,
//! asked per concept or batched, then the refinement rule and Table 9's report.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::HeaderValue;
use futures::future::try_join_all;
use shared_types::{Cue, CueSet, Identity, ReflectionAction, Verification, VerifiedField};

use super::{Reasoner, Tally};
use crate::error::ReasonerError;
use crate::image::DataUri;
use crate::prompts::DetectionReportEntry;
use crate::reflection::{
    PlannedQuestion, absent_cue, parse_yes_no_answers, presence_recheck, recheck_outcome,
    refine_cue,
};
use crate::upstream::ChatCall;

/// What reflection made of the edge's cues.
pub(super) struct Reflection {
    /// The cue set after the refinement rule.
    pub refined: CueSet,
    pub verifications: Vec<Verification>,
    pub actions: BTreeMap<String, ReflectionAction>,
}

/// How a turn's reflection runs: batched or per concept, and which absent concepts get a
/// second look (`recheck_mentioned`).
#[derive(Clone, Copy)]
pub(super) struct ReflectPlan<'a> {
    pub batched: bool,
    pub recheck: &'a BTreeSet<String>,
}

impl Reasoner {
    pub(super) async fn reflect(
        &self,
        cues: &CueSet,
        identities: &BTreeMap<String, Identity>,
        image: &DataUri,
        plan: ReflectPlan<'_>,
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<Reflection, ReasonerError> {
        let groups = question_groups(cues, identities, plan);
        let verifications = self.ask(&groups, image, request_id, tally).await?;
        let mut refined = CueSet::new();
        let mut actions = BTreeMap::new();
        for (id, cue) in cues {
            let answer_about = |field: VerifiedField| {
                verifications
                    .iter()
                    .find(|verification| &verification.concept == id && verification.about == field)
                    .map(|verification| verification.answer)
            };
            let (cue, action) = if plan.recheck.contains(id) {
                recheck_outcome(answer_about(VerifiedField::Presence))
            } else {
                refine_cue(
                    cue,
                    answer_about(VerifiedField::LocationAbsolute),
                    answer_about(VerifiedField::LocationRelative),
                )
            };
            if action != ReflectionAction::NotPresent {
                self.metrics
                    .reflection_outcomes
                    .with_label_values(&[action_label(action)])
                    .inc();
            }
            refined.insert(id.clone(), cue);
            actions.insert(id.clone(), action);
        }
        Ok(Reflection {
            refined,
            verifications,
            actions,
        })
    }

    /// One upstream call per group; the calls of one turn run concurrently, and nothing
    /// serializes them across turns.
    async fn ask(
        &self,
        groups: &[Vec<PlannedQuestion>],
        image: &DataUri,
        request_id: Option<&HeaderValue>,
        tally: &mut Tally,
    ) -> Result<Vec<Verification>, ReasonerError> {
        let json_schema = self.upstream.verify_json_schema_enabled();
        let calls = groups.iter().map(|questions| {
            let texts: Vec<String> = questions
                .iter()
                .enumerate()
                .map(|(index, question)| question.text(index + 1))
                .collect();
            let call = ChatCall::verify(&texts, image, json_schema);
            async move {
                let reply = self.upstream.chat(&call, request_id).await?;
                Ok::<_, ReasonerError>((texts, reply))
            }
        });
        let replies = try_join_all(calls).await?;
        let mut verifications = Vec::new();
        for (questions, (texts, reply)) in groups.iter().zip(replies) {
            tally.add(&reply);
            let answers = parse_yes_no_answers(&reply.content, questions.len());
            for ((question, text), answer) in questions.iter().zip(texts).zip(answers) {
                verifications.push(Verification {
                    concept: question.concept.clone(),
                    about: question.about,
                    question: text,
                    raw_answer: reply.content.clone(),
                    answer,
                });
            }
        }
        Ok(verifications)
    }
}

/// Each group is one upstream call: per concept, or everything at once. A second look is a
/// concept's one question, in its own call per concept or in the batch.
fn question_groups(
    cues: &CueSet,
    identities: &BTreeMap<String, Identity>,
    plan: ReflectPlan<'_>,
) -> Vec<Vec<PlannedQuestion>> {
    let per_concept = cues
        .iter()
        .map(|(id, cue)| {
            if plan.recheck.contains(id) {
                vec![presence_recheck(id, &identities[id])]
            } else {
                crate::reflection::plan_questions(id, &identities[id], cue)
            }
        })
        .filter(|questions| !questions.is_empty());
    if !plan.batched {
        return per_concept.collect();
    }
    let all: Vec<PlannedQuestion> = per_concept.flatten().collect();
    if all.is_empty() {
        Vec::new()
    } else {
        vec![all]
    }
}

/// Without reflection (mode `no_reflection`): present concepts stay unverified.
pub(super) fn unverified_actions(cues: &CueSet) -> BTreeMap<String, ReflectionAction> {
    cues.iter()
        .map(|(id, cue)| {
            let action = if cue.present {
                ReflectionAction::Unverified
            } else {
                ReflectionAction::NotPresent
            };
            (id.clone(), action)
        })
        .collect()
}

/// Table 9's report: every concept of the turn; one the edge did not report counts as absent.
pub(super) fn detection_report(
    identities: &BTreeMap<String, Identity>,
    cues: &CueSet,
) -> BTreeMap<String, DetectionReportEntry> {
    let absent = absent_cue();
    identities
        .iter()
        .map(|(id, identity)| {
            let cue: &Cue = cues.get(id).unwrap_or(&absent);
            (id.clone(), DetectionReportEntry::from_cue(identity, cue))
        })
        .collect()
}

fn action_label(action: ReflectionAction) -> &'static str {
    match action {
        ReflectionAction::Kept => "kept",
        ReflectionAction::DroppedLocationAbsolute => "dropped_location_absolute",
        ReflectionAction::DroppedLocationRelative => "dropped_location_relative",
        ReflectionAction::Suppressed => "suppressed",
        ReflectionAction::NotPresent => "not_present",
        ReflectionAction::Unverified => "unverified",
        ReflectionAction::Recovered => "recovered",
    }
}

/// The concepts a second look is for: reported absent and named in the question as `<id>`
/// (ids compared without case, as the edge's ids are).
pub(super) fn mentioned_misses(cues: &CueSet, question: &str) -> BTreeSet<String> {
    let question = question.to_lowercase();
    cues.iter()
        .filter(|(id, cue)| !cue.present && question.contains(&id.to_lowercase()))
        .map(|(id, _)| id.clone())
        .collect()
}
