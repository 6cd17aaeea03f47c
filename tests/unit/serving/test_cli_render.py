from kiln_operator.cli.render import duration, progress_bar, sparkline


def test_sparkline_scales_between_min_and_max():
    line = sparkline([4.0, 3.0, 2.0, 1.0])
    assert line[0] == "█" and line[-1] == "▁" and len(line) == 4
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert sparkline([]) == ""
    assert len(sparkline(list(range(100)), width=10)) == 10
    assert sparkline([1.0, float("nan"), 2.0]) == "▁█"


def test_progress_bar_clamps():
    assert progress_bar(5, 10, width=10) == "[#####.....]  50.0%"
    assert progress_bar(20, 10, width=4) == "[####] 100.0%"
    assert progress_bar(1, 0, width=4) == "[....]   0.0%"


def test_duration():
    assert [duration(x) for x in (None, 5, 125, 3 * 3600 + 420, 2 * 86400 + 4 * 3600)] == [
        "-", "5s", "2m05s", "3h07m", "2d04h"
    ]
