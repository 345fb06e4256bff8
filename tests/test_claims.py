"""The paper's claims as data (coordexp/claims.yaml): every row of the headline table, its words and its bounds."""
import pytest

from coordexp import claims
from coordexp.config import SPLITS, TASKS
from coordexp.tasks import TASK_CLASSES


@pytest.mark.parametrize("task", TASKS)
def test_every_row_has_the_papers_words_and_a_bound_on_the_tasks_metric(task):
    higher = TASK_CLASSES[task].higher_is_better
    for split in SPLITS:
        row = claims.row(task, split)
        assert row.conv and row.coordconv and "{" not in row.conv + row.coordconv  # the bounds filled in
        if higher:  # accuracy, IoU: the baseline fails below CoordConv's result, and fits above its own failure
            assert 0 < row.fails < claims.fits(task) <= claims.solved(task) <= 1
        else:  # pixel error: the baseline fails at or above the bar CoordConv gets under
            assert row.fails >= claims.solved(task) > 0 and claims.fits(task) > 1


def test_the_papers_words_state_the_bounds_the_verdicts_use():
    assert claims.row("classification", "uniform").conv == "train up to 100%, test never above 86%"
    assert claims.row("classification", "uniform").fails == 0.86
    assert claims.row("classification", "quarter").coordconv == "100% / 100%" and claims.solved("classification") == 1
    assert claims.row("rendering", "quarter").conv == "test IoU <= 0.36" and claims.row("rendering", "quarter").fails == 0.36
