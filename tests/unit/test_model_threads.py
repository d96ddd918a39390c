"""ingest.model_threads: reading threads and the embedding thread share the cores instead of each
taking all of them (issue 14, ingest); torch's own setting comes back after the ingest."""

from __future__ import annotations

import pytest

from mmrag_li.config import Settings
from mmrag_li.ingest.threads import capped_model_threads, threads_per_call


@pytest.mark.parametrize("setting,workers,cores,expected", [
    ("auto", 1, 2, 1), ("auto", 2, 2, 1), ("auto", 2, 16, 5), ("auto", 1, 1, 1), (0, 2, 8, None), ("0", 2, 8, None),
    (3, 1, 2, 3), ("4", 9, 2, 4)])
def test_threads_per_call(setting, workers, cores, expected):
    assert threads_per_call(setting, workers, cores) == expected


def test_setting_is_validated_by_the_config():
    assert Settings.load(None).ingest.model_threads == 0  # no cap unless asked
    assert Settings.load(None, **{"ingest.model_threads": "auto"}).ingest.model_threads == "auto"
    assert Settings.load(None, **{"ingest.model_threads": "2"}).ingest.model_threads == 2
    with pytest.raises(Exception, match="model_threads"):
        Settings.load(None, **{"ingest.model_threads": "many"})


def test_torch_threads_are_capped_inside_and_restored_after():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with capped_model_threads(1, workers=1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with capped_model_threads(0, workers=1) as n:
        assert n is None and torch.get_num_threads() == before
