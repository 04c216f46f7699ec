//! The PNG chart decodes, has the expected size, bars, whiskers and text pixels.

use std::collections::BTreeMap;

use slc_eval::EvalMode;
use slc_eval::items::Task;
use slc_eval::metrics::{MetricRow, proportion};
use slc_eval::report::ModeReport;
use slc_eval::report::chart::{
    BAR, BAR_LEFT, BAR_RIGHT, INK, ROW_HEIGHT, TOP, WIDTH, draw_mode_chart,
};

fn row(task: Task, metric: &str, successes: u64, trials: u64) -> MetricRow {
    MetricRow {
        task,
        source: "all".into(),
        metric: metric.into(),
        figure: proportion(successes, trials).unwrap(),
        trials,
        unparseable: 0,
        errors: 0,
    }
}

#[test]
fn chart_renders_bars_whiskers_and_text_without_system_fonts() {
    let rows = vec![
        row(Task::Recognition, "yes_recall", 9, 10),
        row(Task::VisualMultipleChoice, "accuracy", 1, 4),
    ];
    let report = ModeReport {
        mode: EvalMode::NoReflection,
        headline: rows.clone(),
        strict: rows.clone(),
        lenient: rows,
        recognition_from_raw_cues: vec![],
        recognition_from_refined_cues: vec![],
        per_concept: BTreeMap::new(),
        per_category: BTreeMap::new(),
        unparseable: 0,
        errors: 0,
        from_cache: 0,
    };
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("chart.png");
    draw_mode_chart(&report, &path).unwrap();
    let image = image::open(&path).unwrap().to_rgb8();
    let rows = 2;
    assert_eq!(
        (image.width(), image.height() as i32),
        (WIDTH, TOP + rows * ROW_HEIGHT + 50)
    );
    let ink = |x: i32, y: i32| image.get_pixel(x as u32, y as u32).0 == [INK.0, INK.1, INK.2];
    let bar = |x: i32, y: i32| image.get_pixel(x as u32, y as u32).0 == [BAR.0, BAR.1, BAR.2];
    let axis = |value: f64| BAR_LEFT + ((BAR_RIGHT - BAR_LEFT) as f64 * value) as i32;
    let ink_in = |xs: std::ops::Range<i32>, ys: std::ops::Range<i32>| {
        ys.clone().any(|y| xs.clone().any(|x| ink(x, y)))
    };
    // Title text in the top band.
    assert!(ink_in(20..400, 16..40), "no title text");
    for (index, value) in [0.9, 0.25].into_iter().enumerate() {
        let top = TOP + index as i32 * ROW_HEIGHT;
        let probe = top + 9; // inside the bar, above the whisker
        // The bar ends at the value.
        assert!(
            bar(axis(value) - 4, probe) && !bar(axis(value) + 4, probe),
            "row {index}"
        );
        // A label on the left and the value printed on the right.
        assert!(
            ink_in(20..BAR_LEFT - 20, top..top + ROW_HEIGHT),
            "row {index} label"
        );
        assert!(
            ink_in(BAR_RIGHT + 8..WIDTH as i32, top..top + ROW_HEIGHT),
            "row {index} value"
        );
    }
    // Tick labels under the axis.
    let bottom = TOP + rows * ROW_HEIGHT;
    assert!(
        ink_in(BAR_LEFT - 20..BAR_LEFT + 20, bottom + 6..bottom + 20),
        "no tick label"
    );
}
