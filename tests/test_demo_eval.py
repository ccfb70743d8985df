"""The timing benchmark's parts: detector validated on ground truth, prompts, subject parsing."""
import json

import numpy as np
import pytest

from alchemint_core.demo.detector import SubjectDetector
from alchemint_core.demo.evaluate import heldout_prompts, load_detector, load_prompts, validate_detector
from alchemint_core.demo.pipeline import appearance_of, parse_subject
from alchemint_core.synthetic import HELD_OUT, appearances, random_video
from conftest import ROOT


@pytest.fixture(scope="module")
def detector() -> SubjectDetector:
    return load_detector()


def test_detector_recovers_ground_truth_intervals(detector):
    assert validate_detector(detector, videos=25, seed=5) >= 0.98


def test_detector_reads_shape_and_colour_of_ground_truth_subjects(detector):
    shape_ok = colour_ok = n = 0
    for seed in range(8):
        v = random_video(np.random.default_rng(seed), "test")
        for s in v.subjects:
            det = detector.detect(v.frames, s.appearance.colour, s.appearance.shape)
            shape_ok += det.shape_right[det.present].sum()
            colour_ok += det.colour_right[det.shape_seen].sum()
            n += det.present.sum()
    assert shape_ok / n > 0.85 and colour_ok / n > 0.9


def test_held_out_prompts_are_seeded_and_use_only_held_out_subjects():
    a, b = heldout_prompts(100, seed=3), heldout_prompts(100, seed=3)
    assert [p.seed for p in a] == [p.seed for p in b]
    subjects = [s for p in a for s in p.subjects]
    assert len(subjects) == 100
    assert all((appearance_of(s.tag).colour, appearance_of(s.tag).shape) in HELD_OUT for s in subjects)
    assert all(0 <= s.start < s.end <= 17 / 8 for s in subjects)
    seen = [s for p in heldout_prompts(100, seed=3, split="train") for s in p.subjects]
    assert len(seen) == 100 and not any(appearance_of(s.tag).held_out for s in seen)


def test_prompts_file(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([{"subjects": [{"tag": "red star", "start": 0.5, "end": 1.5}], "seed": 3}]))
    p = load_prompts(tmp_path / "p.json")
    assert p[0].subjects[0].tag == "red star" and p[0].seed == 3
    (tmp_path / "bad.json").write_text(json.dumps([{"subjects": [{"tag": "red star"}]}]))
    with pytest.raises(ValueError, match="--prompts"):
        load_prompts(tmp_path / "bad.json")
    (tmp_path / "unknown.json").write_text(json.dumps([{"subjects": [{"tag": "purple dog", "start": 0, "end": 1}]}]))
    with pytest.raises(ValueError, match="colour"):
        load_prompts(tmp_path / "unknown.json")


@pytest.mark.parametrize("text,expect", [("red ring:0.5-2.0", ("red ring", 0.5, 2.0)),
                                         (" blue  star : 0 - 1 ", ("blue star", 0.0, 1.0))])
def test_subject_option_parses(text, expect):
    s = parse_subject(text)
    assert (s.tag, s.start, s.end) == expect


@pytest.mark.parametrize("bad, match", [("red ring", "TAG:START-END"), ("red ring:1", "TAG:START-END"),
                                        ("red ring:a-b", "TAG:START-END"), (":0-1", "tag is empty")])
def test_bad_subject_options_explain_the_format(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_subject(bad)


def test_always_present_baseline_scores_the_interval_lengths():
    from alchemint_core.demo.evaluate import Prompt, PromptSubject, always_present, markdown_table
    prompts = [Prompt([PromptSubject("red star", 0.0, 17 / 8)], 0), Prompt([PromptSubject("cyan ring", 0.5, 1.0)], 1)]
    row = always_present(prompts)
    assert row.t_iou[0] == pytest.approx((1.0 + 0.5 / (17 / 8)) / 2) and row.subjects == 2
    assert "| always present (no model) |" in markdown_table([row]) and "nan" not in markdown_table([row])


def test_vae_ceiling_scores_the_prompts_ground_truth_through_the_vae(detector):
    """The prompts' ground-truth videos place each subject exactly in its interval (the detector finds them there);
    through the VAE they score no better, and are scored by the same code as generated videos."""
    from alchemint_core.demo.evaluate import Tally, ground_truth_video, through_vae
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    from alchemint_core.encoders import load_encoders
    from alchemint_core.native import DemoVAE
    prompts = heldout_prompts(16, seed=11)
    raw = Tally()
    for p in prompts:
        raw.add(ground_truth_video(p), p.subjects, detector)
    exact = raw.scores("ground truth")
    assert exact.t_iou[0] >= 0.97 and exact.shape_accuracy > 0.9 and exact.colour_accuracy > 0.9
    ceiling = through_vae(DemoVAE(load_encoders(ENCODERS_FILE)[0]), prompts, detector)
    assert ceiling.subjects == 16 and ceiling.name == "ground truth through the VAE (ceiling)"
    assert 0.3 < ceiling.t_iou[0] <= exact.t_iou[0]


def test_frame_wise_vae_keeps_presence_inside_latent_frames_where_the_joint_one_snaps_it(detector):
    """The shipped frame-wise VAE against the joint one the ablations were trained on, on the same ground truth:
    the joint one draws a subject in all four frames of a latent frame or none (t-IOU ~0.8), the frame-wise one
    keeps each frame (1.0 here) and the subjects' shapes."""
    from alchemint_core.demo.evaluate import through_vae
    from alchemint_core.demo.pipeline import ENCODERS_FILE, WEIGHTS
    from alchemint_core.encoders import load_encoders
    from alchemint_core.native import DemoVAE
    prompts = heldout_prompts(16, seed=11)
    joint_vae, frame_wise_vae = (load_encoders(f)[0] for f in (WEIGHTS / "ablations" / "encoders.safetensors",
                                                               ENCODERS_FILE))
    assert frame_wise_vae.frame_wise and not joint_vae.frame_wise
    joint = through_vae(DemoVAE(joint_vae), prompts, detector)
    frame_wise = through_vae(DemoVAE(frame_wise_vae), prompts, detector)
    assert frame_wise.t_iou[0] >= 0.97 and frame_wise.t_iou[0] > joint.t_iou[0] + 0.1
    assert frame_wise.shape_accuracy > 0.85 and frame_wise.colour_accuracy > 0.95


def test_shipped_model_follows_the_requested_intervals_better_than_drawing_subjects_always(detector):
    """The benchmark's scoring path on the real shipped model: 12 held-out subject-intervals at the default 40
    steps (about 0.86 t-IOU here against 0.44 for the always-present baseline)."""
    from alchemint_core.demo.evaluate import always_present, score
    from alchemint_core.demo.pipeline import DemoPipeline
    prompts = heldout_prompts(12, seed=7)
    shipped, baseline = score(DemoPipeline(), prompts, detector, "shipped"), always_present(prompts)
    assert shipped.subjects == baseline.subjects == 12
    assert shipped.t_iou[0] > baseline.t_iou[0] + 0.1 and shipped.t_l2[0] < baseline.t_l2[0] - 0.1
    assert shipped.length_correlation > 0.2 and 0 <= shipped.shape_accuracy <= 1


def test_evaluate_command_writes_scores_and_the_settings_it_ran_with(tmp_path, capsys):
    from alchemint_core import cli
    prompts = [{"subjects": [{"tag": "red star", "start": 0.5, "end": 1.5}, {"tag": "blue square", "start": 0,
                                                                          "end": 1}], "seed": 3},
               {"subjects": [{"tag": "green disc", "start": 1.0, "end": 2.0}], "seed": 4}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "e.json"
    assert cli.main(["evaluate", "--prompts", str(tmp_path / "p.json"), "--no-ablations", "--steps", "2",
                     "--ref-scale", "1.5", "--text-scale", "2", "--shift", "2", "--threads", "1",
                     "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["subjects"], data["steps"], data["ref_scale"], data["text_scale"], data["shift"]) == (3, 2, 1.5, 2, 2)
    assert data["split"] is None  # prompts from a file
    assert data["detector_t_iou"] >= 0.98
    assert [r["name"] for r in data["results"]] == ["always present (no model)",
                                                    "ground truth through the VAE (ceiling)", "shipped"]
    assert all(0 <= r["t_iou"][0] <= 1 and r["subjects"] == 3 for r in data["results"])
    assert "| shipped |" in capsys.readouterr().out


def test_each_model_is_evaluated_with_the_encoders_beside_it(tmp_path):
    """A model folder carries the encoders it was trained on: evaluate pairs each model with its own VAE (a DiT
    only reads the latents it was trained on) and reports one ceiling per VAE."""
    import shutil

    from alchemint_core import cli
    from alchemint_core.demo.evaluate import ABLATIONS
    from alchemint_core.demo.pipeline import MODEL_FILE, DemoPipeline
    assert DemoPipeline(MODEL_FILE).vae.latent_channels == 32  # the shipped frame-wise VAE
    assert DemoPipeline(ABLATIONS["mid"]).vae.latent_channels == 16  # the ablations' joint one, beside them
    shutil.copy(ABLATIONS["mid"], tmp_path / "alone.safetensors")  # no encoders beside it
    with pytest.raises(ValueError, match="32-channel.*reads 16.*encoders.safetensors beside the model file"):
        DemoPipeline(tmp_path / "alone.safetensors")  # falls back to the shipped encoders, which do not fit
    (tmp_path / "p.json").write_text(json.dumps([{"subjects": [{"tag": "red star", "start": 0.5, "end": 1.5}],
                                                  "seed": 3}]))
    out = tmp_path / "e.json"
    assert cli.main(["evaluate", "--prompts", str(tmp_path / "p.json"), "--model", f"a={MODEL_FILE}",
                     "--model", f"b={ABLATIONS['mid']}", "--steps", "2", "--threads", "1", "--wrong-reference",
                     "--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert list(rows) == ["always present (no model)", "ground truth through the VAE (ceiling)",
                          "ground truth through the VAE of b (ceiling)", "a", "a, wrong reference", "b",
                          "b, wrong reference"]
    # the frame-wise VAE keeps presence inside latent frames, the joint one snaps it to 4-frame blocks
    assert rows["ground truth through the VAE (ceiling)"]["t_iou"][0] > rows[
        "ground truth through the VAE of b (ceiling)"]["t_iou"][0]


def test_from_truth_diagnostic_keeps_what_the_ground_truth_shows_at_low_noise(detector):
    """evaluate --from-truth: each video starts from its own ground truth noised to sigma. At low noise the shipped
    model keeps the subjects' intervals and shapes (the diagnostic measures what is decided above that level)."""
    from alchemint_core.demo.evaluate import score
    from alchemint_core.demo.pipeline import DemoPipeline
    prompts = heldout_prompts(8, seed=7)
    kept = score(DemoPipeline(), prompts, detector, "low noise", steps=10, from_truth=0.2)
    assert kept.t_iou[0] >= 0.95 and kept.shape_accuracy >= 0.6 and kept.colour_accuracy >= 0.9  # chance: 1/6


def test_other_shapes_redraw_the_ground_truth_with_only_the_shapes_changed(detector):
    """--other-shapes starts from the same ground truth with every subject in another shape of its colour: same
    frames where each colour is present, the detector reads the new shapes, and the requested ones are gone."""
    from alchemint_core.demo.evaluate import ground_truth_video, other_shapes_of
    kept = moved = n = 0
    for p in heldout_prompts(12, seed=11):
        shapes = other_shapes_of(p)
        assert shapes == other_shapes_of(p)  # seeded by the prompt
        truth, other = ground_truth_video(p), ground_truth_video(p, shapes)
        assert truth.shape == other.shape and not np.array_equal(truth, other)
        for s, shape in zip(p.subjects, shapes):
            a = appearance_of(s.tag)
            assert shape != a.shape
            det, det_other = detector.detect(truth, a.colour, a.shape), detector.detect(other, a.colour, a.shape)
            assert np.array_equal(det.present, det_other.present)  # same places and times
            kept += det_other.shape_right[det_other.present].sum()
            moved += detector.detect(other, a.colour, shape).shape_right[det_other.present].sum()
            n += det_other.present.sum()
    assert moved / n > 0.85 and kept / n < 0.1


def test_other_shapes_row_tells_the_input_shape_from_the_requested_one(detector, tmp_path, capsys):
    """At low noise the shipped model keeps what its input shows, so started from other shapes it keeps those:
    the row's input-shape column is high and its shape-right column low; the table and JSON carry the column."""
    from alchemint_core.demo.evaluate import markdown_table, score
    from alchemint_core.demo.pipeline import DemoPipeline
    row = score(DemoPipeline(), heldout_prompts(6, seed=7), detector, "low noise", steps=10, from_truth=0.2,
                other_shapes=True)
    assert row.input_shape_kept >= 0.6 and row.shape_accuracy <= 0.2 and row.t_iou[0] >= 0.9
    table = markdown_table([row])
    assert "input's shape kept" in table.splitlines()[0] and f"{row.input_shape_kept:.1%}" in table
    plain = score(DemoPipeline(), heldout_prompts(2, seed=7), detector, "plain", steps=10, from_truth=0.2)
    assert np.isnan(plain.input_shape_kept) and "input's shape" not in markdown_table([plain])
    with pytest.raises(ValueError, match="other_shapes needs from_truth < 1"):
        score(DemoPipeline(), heldout_prompts(1, seed=7), detector, "x", steps=2, other_shapes=True)


def test_other_shapes_without_from_truth_is_refused_before_any_work(tmp_path):
    from alchemint_core import cli
    with pytest.raises(ValueError, match="--other-shapes .* --from-truth SIGMA"):
        cli.cmd_evaluate(cli.build_parser().parse_args(["evaluate", "--other-shapes",
                                                        "--out", str(tmp_path / "e.json")]))
    assert not (tmp_path / "e.json").exists()


def test_from_truth_outside_zero_to_one_is_refused_before_any_work(tmp_path):
    from alchemint_core import cli
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(ValueError, match=r"--from-truth: .*\(0, 1\]"):
            cli.cmd_evaluate(cli.build_parser().parse_args(["evaluate", "--from-truth", bad,
                                                            "--out", str(tmp_path / "e.json")]))
    assert not (tmp_path / "e.json").exists()
