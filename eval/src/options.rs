//! Multiple-choice questions: splitting the authors' one-line form ("… ? A. Cat. B. Dog.")
//! into stem and options, rendering it back, and the seeded shuffle that defeats the
//! Yo'LLaVA text-only set's "the answer is A" bias.

use sha2::{Digest, Sha256};

use crate::items::option_letter;

/// Splits "What is <bo>'s breed? A. Corgi. B. Shiba inu." into the stem and the options.
/// Markers are an uppercase letter and a period or colon after whitespace, punctuation or the
/// start, in order A, B, C, … (the MC-LLaVA files also write "A: Red." and "?A. x;B. y;"); the last "A." that starts such a run wins, so an "A." inside the stem is
/// skipped. Needs at least two options.
pub fn split_choices(text: &str) -> Option<(String, Vec<String>)> {
    let candidates: Vec<usize> = marker_positions(text, 'A', 0);
    for &start in candidates.iter().rev() {
        let mut markers = vec![start];
        let mut letter_index = 1;
        loop {
            let letter = option_letter(letter_index);
            let after = markers[markers.len() - 1] + 2;
            match marker_positions(text, letter, after).first() {
                Some(&position) => {
                    markers.push(position);
                    letter_index += 1;
                }
                None => break,
            }
        }
        if markers.len() < 2 {
            continue;
        }
        let stem = text[..start].trim().to_string();
        let mut options = Vec::with_capacity(markers.len());
        for (i, &marker) in markers.iter().enumerate() {
            let end = markers.get(i + 1).copied().unwrap_or(text.len());
            options.push(clean_option(&text[marker + 2..end]));
        }
        if options.iter().any(|option| option.is_empty()) {
            continue;
        }
        return Some((stem, options));
    }
    None
}

fn marker_positions(text: &str, letter: char, from: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = from;
    while i + 1 < bytes.len() {
        if bytes[i] == letter as u8
            && (bytes[i + 1] == b'.' || bytes[i + 1] == b':')
            && (i == 0 || bytes[i - 1].is_ascii_whitespace() || b";,.?!)".contains(&bytes[i - 1]))
        {
            found.push(i);
        }
        i += 1;
    }
    found
}

fn clean_option(raw: &str) -> String {
    raw.trim()
        .trim_end_matches(['.', ';', ','])
        .trim()
        .to_string()
}

/// The authors' layout: `{stem} A. {o1}. B. {o2}.` and the instruction on its own line.
pub fn render_choice_question(stem: &str, options: &[String], instruction: Option<&str>) -> String {
    let listed: Vec<String> = options
        .iter()
        .enumerate()
        .map(|(i, option)| format!("{}. {}.", option_letter(i), option))
        .collect();
    let mut text = format!("{} {}", stem, listed.join(" "));
    if let Some(instruction) = instruction {
        text.push('\n');
        text.push_str(instruction);
    }
    text
}

/// A permutation of `0..n` that depends only on the seed and the item id, so that
/// `--limit`, concurrency and the order of the input files never change what an item shows.
/// `shown[i] = original[permutation[i]]`.
pub fn shuffle_permutation(seed: u64, item_id: &str, n: usize) -> Vec<usize> {
    let digest = Sha256::digest(format!("{seed}\u{0}{item_id}").as_bytes());
    let mut state = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut permutation: Vec<usize> = (0..n).collect();
    // Fisher–Yates with SplitMix64: tiny, stable across platforms and crate versions.
    for i in (1..n).rev() {
        let j = (split_mix_64(&mut state) % (i as u64 + 1)) as usize;
        permutation.swap(i, j);
    }
    permutation
}

fn split_mix_64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The options in shown order and where the correct one ended up.
pub fn apply_permutation(
    options: &[String],
    correct: usize,
    permutation: &[usize],
) -> (Vec<String>, usize) {
    let shown: Vec<String> = permutation.iter().map(|&i| options[i].clone()).collect();
    let shown_correct = permutation
        .iter()
        .position(|&i| i == correct)
        .expect("a permutation contains every index");
    (shown, shown_correct)
}
