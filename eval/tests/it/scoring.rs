//! Strict parsing and the authors' lenient substring scoring, including its traps.

use slc_eval::scoring::{
    Parsed, lenient_choice_correct, lenient_presence_correct, parse_choice, parse_yes_no,
};

fn options(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn strict_yes_no_takes_the_first_standalone_word() {
    let table = [
        ("Yes", Parsed::Yes),
        ("  yes.", Parsed::Yes),
        ("No, <bo> is not in this image.", Parsed::No),
        ("YES!", Parsed::Yes),
        ("In this photo, yes: <bo> is on the left.", Parsed::Yes),
        ("It is not there.", Parsed::Unparseable),
        ("I don't know.", Parsed::Unparseable),
        ("Nobody knows; yesterday maybe", Parsed::Unparseable),
        ("", Parsed::Unparseable),
    ];
    for (answer, expected) in table {
        assert_eq!(parse_yes_no(answer), expected, "answer {answer:?}");
    }
}

#[test]
fn strict_choice_takes_the_first_standalone_letter_in_range() {
    let two = options(&["Dog", "Cat"]);
    let table = [
        ("B", Parsed::Choice(1)),
        ("B.", Parsed::Choice(1)),
        ("(A) Dog", Parsed::Choice(0)),
        ("Answer: B", Parsed::Choice(1)),
        ("I think B", Parsed::Choice(1)), // "I" is out of range for two options
        ("C", Parsed::Unparseable),       // out of range
        ("a", Parsed::Unparseable),       // lowercase is an article, not a choice
        ("cat.", Parsed::Choice(1)),      // exactly one option's text
        ("It is a cat", Parsed::Unparseable),
        ("", Parsed::Unparseable),
    ];
    for (answer, expected) in table {
        assert_eq!(parse_choice(answer, &two), expected, "answer {answer:?}");
    }
}

#[test]
fn lenient_scoring_falls_into_the_not_and_know_trap() {
    // The authors count a negative as correctly rejected when "no" is anywhere in the answer.
    assert!(lenient_presence_correct("It is not in the image", false));
    assert!(lenient_presence_correct("I don't know", false));
    assert!(lenient_presence_correct("Yes, and nothing else", false));
    // Strict scoring reads the same answers honestly.
    assert_eq!(parse_yes_no("It is not in the image"), Parsed::Unparseable);
    assert_eq!(parse_yes_no("I don't know"), Parsed::Unparseable);
    assert_eq!(parse_yes_no("Yes, and nothing else"), Parsed::Yes);
    // Positives need "yes" somewhere: "eyes" counts.
    assert!(lenient_presence_correct("I see its eyes", true));
    assert!(!lenient_presence_correct("No", true));
}

#[test]
fn lenient_choice_matches_any_occurrence_of_the_letter() {
    // gt "A": any answer containing the letter a is right.
    assert!(lenient_choice_correct("B. Cat", 'A'));
    assert!(lenient_choice_correct("The answer is B", 'A'));
    assert!(!lenient_choice_correct("B", 'A'));
    assert!(lenient_choice_correct("B", 'B'));
    assert_eq!(
        parse_choice("B. Cat", &options(&["Dog", "Cat"])),
        Parsed::Choice(1)
    );
}
