"""``report.md`` and ``report.html`` of a run folder made by hand: no training needed."""

import json
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.preprocess import ChannelNormalization, Plan
from c2fnas.report import inline_html, write_report

CASES = [f"case_{n:03d}" for n in range(1, 6)]
SHAPE = (8, 8, 8)


def _nifti(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), path)


def _reference(index):
    """Organ (1) in a block, lesion (2) in a smaller one; the same shape for every case."""
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:6, 2:6] = 1
    label[3:5, 3:5, 3:5] = 2
    return label


def _prediction(index):
    """Case 3 misses the lesion entirely: the worst case, which the tables must list first."""
    label = _reference(index)
    if index == 3:
        label[label == 2] = 1
    if index == 1:
        label[2, 2, 2] = 0  # a little off: 63 of 64 voxels of the organ
    return label


@pytest.fixture
def run_dir(tmp_path):
    dataset, run = tmp_path / "data", tmp_path / "run"
    entries = []
    for index, case in enumerate(CASES, start=1):
        _nifti(np.zeros(SHAPE), dataset / "imagesTr" / f"{case}.nii.gz")
        _nifti(_reference(index), dataset / "labelsTr" / f"{case}.nii.gz")
        _nifti(_prediction(index), run / "crossval" / f"{case}.nii.gz")
        entries.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    description = {
        "name": "Toy",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "training": entries,
        "test": [],
    }
    (dataset / "dataset.json").write_text(json.dumps(description))
    run.mkdir(exist_ok=True)
    (run / "dataset.json").write_text(json.dumps({**description, "source": str(dataset)}))
    Plan(
        spacing=(1.0, 1.0, 1.0),
        normalization=[ChannelNormalization(scheme="mr")],
        modalities={0: "MRI"},
        labels={0: "background", 1: "organ", 2: "lesion"},
        dataset="Toy",
    ).save(run)
    # one trained fold, its history in the latest checkpoint as the training loop saves it
    fold = run / "train" / "fold_0"
    (fold / "best").mkdir(parents=True)
    (fold / "best" / "model.json").write_text(json.dumps({"dice": [0.9, 0.5], "iteration": 20}))
    checkpoint = fold / "checkpoints" / "iter_0000030"
    checkpoint.mkdir(parents=True)
    history = {
        "loss": [[i, 1.5 - i / 30, 0.02] for i in range(1, 31)],
        "dice": [[10, [0.7, 0.2], 0.45, 1], [20, [0.9, 0.5], 0.7, 1], [30, [0.88, 0.5], 0.69, 1]],
    }
    (checkpoint / "state.json").write_text(json.dumps({"iteration": 30, "history": history}))
    (fold / "checkpoints" / "latest.json").write_text(
        json.dumps({"checkpoint": checkpoint.name, "iteration": 30})
    )
    (run / "pipeline.json").write_text(
        json.dumps(
            {
                "stages": {
                    "check": {"done": True, "seconds": 1.0},
                    "train": {"done": True, "seconds": 540.0},
                    "postprocess": {"done": True, "seconds": 30.0},
                },
                "planned": {"data": 60.0, "training": 600.0, "prediction": 60.0},
                "budget": 900.0,
                "refits": [
                    {
                        "at_iteration": 5,
                        "step": 0.5,
                        "validation": 2.0,
                        "seconds": 270.0,
                        "planned_iterations": 24,
                        "training": {"iterations": 30, "validate_every": 15},
                    },
                    {
                        "at_iteration": 0,
                        "step": 0.4,
                        "validation": 2.0,
                        "seconds": 300.0,
                        "planned_iterations": 30,
                        "training": {"iterations": 36, "validate_every": 15},
                        "before_fold": 1,
                    },
                ],
            }
        )  # fmt: skip
    )
    (run / "evaluation").mkdir()
    (run / "evaluation" / "cases.csv").write_text(
        "case,label,dice,hd95,surface_dice\n"
        "test_a,1,0.95,1.0,0.9\ntest_a,2,0.90,1.0,0.9\n"
        "test_b,1,0.40,9.0,0.3\ntest_b,2,0.10,9.0,0.1\n"
    )
    (run / "evaluation" / "summary.json").write_text(
        json.dumps(
            {
                "labels": {
                    "1": {
                        "dice_mean": 0.675,
                        "dice_std": 0.275,
                        "hd95_mean": 5.0,
                        "surface_dice_mean": 0.6,
                        "cases": 2,
                    },
                    "2": {
                        "dice_mean": 0.5,
                        "dice_std": 0.4,
                        "hd95_mean": 5.0,
                        "surface_dice_mean": 0.5,
                        "cases": 2,
                    },
                },
                "mean_dice": 0.5875,
            }
        )  # fmt: skip
    )
    return run


class _Page(HTMLParser):
    """The text outside tags, the tables' rows, and every image source."""

    def __init__(self):
        super().__init__()
        self.text, self.rows, self.images, self.headings = [], [], [], []
        self._row, self._in_heading = None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "h2":
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None
        elif tag == "h2":
            self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None:
            self._row.append(data)
        if self._in_heading:
            self.headings[-1] += data


def _page(run_dir):
    write_report(run_dir)
    page = _Page()
    page.feed((run_dir / "report.html").read_text())
    return page


def test_html_renders_markdown_without_raw_backticks(run_dir):
    page = _page(run_dir)
    assert "`" not in "".join(page.text)
    html = (run_dir / "report.html").read_text()
    assert "<code>crossval/</code>" in html
    assert "`crossval/`" in (run_dir / "report.md").read_text()  # the Markdown keeps its own


def test_inline_markup_escapes_what_the_user_named():
    assert inline_html("case `<b>x</b>` and **bold** & <i>") == (
        "case <code>&lt;b&gt;x&lt;/b&gt;</code> and <strong>bold</strong> &amp; &lt;i&gt;"
    )


def test_each_fold_shows_its_training_curves_from_the_checkpoint_history(run_dir):
    page = _page(run_dir)
    assert "Fold 0: training curves" in page.headings
    embedded = [src for src in page.images if src.startswith("data:image/png;base64,")]
    assert len(embedded) == 1
    fold_row = next(row for row in page.rows if row and row[0] == "0")
    # fold, organ, lesion, mean, best iteration, iterations, final loss
    assert fold_row[1:6] == ["0.9000", "0.5000", "0.7000", "20", "30"]
    markdown = (run_dir / "report.md").read_text()
    assert "(train/fold_0/progress.png)" in markdown and "base64" not in markdown


def test_out_of_fold_and_test_cases_are_listed_worst_first(run_dir):
    page = _page(run_dir)
    assert "Out-of-fold Dice per case, worst first" in page.headings
    case_rows = [row for row in page.rows if row and row[0].startswith("case_")]
    assert [row[0] for row in case_rows][:2] == ["case_003", "case_001"]
    assert case_rows[0][1:] == ["2", "0.9333", "0.0000", "0.4667"]  # fold 2: lesion missed
    assert all(row[-1] == "1.0000" for row in case_rows[2:])
    test_rows = [row for row in page.rows if row and row[0].startswith("test_")]
    assert [row[0] for row in test_rows] == ["test_b", "test_a"]
    assert test_rows[0][-1] == "0.2500"


def test_each_refit_of_the_training_is_reported(run_dir):
    text = " ".join("".join(_page(run_dir).text).split())
    assert "re-fitted at iteration 5 of the first fold to the measured 0.500 s a step" in text
    assert "24 -> 30 iterations per fold (0.3 min each at that step, of the 4.5 min" in text
    assert "re-fitted before fold 1, from the last fold finished, to the measured 0.400 s" in text
    assert "30 -> 36 iterations per fold (0.3 min each at that step, of the 5.0 min" in text


def test_time_planned_against_spent(run_dir):
    page = _page(run_dir)
    assert "Time planned against spent" in page.headings
    rows = {row[0]: row[1:] for row in page.rows if len(row) == 4}  # not the stage table
    assert rows["training"] == ["10.0", "9.0", "0.90"]  # train 540 s of 600 planned
    assert rows["prediction"] == ["1.0", "0.5", "0.50"]  # postprocess 30 s of 60
    assert rows["total"] == ["12.0", "9.5", "0.79"]
