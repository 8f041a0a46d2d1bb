"""SPC rules flag seeded out-of-control patterns and stay quiet on a stable process; Cp/Cpk
and p-chart limits match hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect.health.spc import Rule, capability, imr_chart, p_chart, run_rules

# A quiet in-control start, well inside 1 sigma and alternating sides (breaks no rule).
QUIET = [0.3, -0.3, 0.2, -0.2, 0.3, -0.3, 0.2, -0.2, 0.3, -0.3]


def flagged_with(flags: list[tuple[Rule, ...]], rule: Rule) -> list[int]:
    return [i for i, f in enumerate(flags) if rule in f]


def test_quiet_series_breaks_no_rule() -> None:
    assert all(f == () for f in run_rules(QUIET))


def test_shift_of_eight_points_flags_the_eighth_and_not_the_seventh() -> None:
    z = QUIET + [0.5] * 9
    hits = flagged_with(run_rules(z), Rule.EIGHT_ONE_SIDE)
    assert hits == [len(QUIET) + 7, len(QUIET) + 8]
    assert not flagged_with(run_rules(QUIET + [0.5] * 7), Rule.EIGHT_ONE_SIDE)


def test_trend_of_six_flags_the_sixth_point() -> None:
    rising = [-0.5, -0.3, -0.1, 0.1, 0.3, 0.5]
    hits = flagged_with(run_rules(QUIET + rising), Rule.TREND_SIX)
    assert hits == [len(QUIET) + 5]
    assert not flagged_with(run_rules(QUIET + rising[:5]), Rule.TREND_SIX)
    falling = [-v for v in rising]
    assert flagged_with(run_rules(QUIET + falling), Rule.TREND_SIX) == [len(QUIET) + 5]


def test_one_point_beyond_three_sigma_is_the_only_flag() -> None:
    z = [*QUIET, -3.4, *QUIET]
    flags = run_rules(z)
    assert flags[len(QUIET)] == (Rule.BEYOND_3SIGMA,)
    assert sum(bool(f) for f in flags) == 1


def test_two_of_three_beyond_two_sigma_only_on_the_same_side() -> None:
    assert flagged_with(run_rules([*QUIET, 2.4, 0.1, 2.2]), Rule.TWO_OF_THREE_2SIGMA) == [12]
    assert not flagged_with(run_rules([*QUIET, 2.4, 0.1, -2.2]), Rule.TWO_OF_THREE_2SIGMA)


def test_four_of_five_beyond_one_sigma() -> None:
    z = [*QUIET, 1.2, 1.5, 0.2, 1.1, 1.3]
    assert flagged_with(run_rules(z), Rule.FOUR_OF_FIVE_1SIGMA) == [14]
    assert not flagged_with(run_rules([*QUIET, 1.2, 1.5, 0.2, 1.1]), Rule.FOUR_OF_FIVE_1SIGMA)


def test_imr_chart_flags_a_seeded_spike_and_a_seeded_shift() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(60.0, 0.05, 120)
    x[40] += 0.4  # 8 sigma: beyond the limits
    x[80:100] += 0.1  # a 2 sigma shift for 20 parts
    chart = imr_chart(x)
    assert Rule.BEYOND_3SIGMA in chart.flags[40]
    assert chart.mr_flags[39] or chart.mr_flags[40]  # the jump shows on the MR chart too
    shift = [i for i in range(80, 100) if chart.flags[i]]
    assert shift, "the shift broke no rule"
    assert not any(Rule.BEYOND_3SIGMA in chart.flags[i] for i in range(40))
    assert chart.ucl == pytest.approx(chart.centre + 3 * chart.sigma)


def test_stable_process_gives_rule_one_flags_near_the_false_alarm_rate() -> None:
    rng = np.random.default_rng(2026)
    chart = imr_chart(rng.normal(20.0, 0.1, 20_000))
    rule1 = sum(Rule.BEYOND_3SIGMA in f for f in chart.flags) / 20_000
    assert 0.0005 < rule1 < 0.006  # 0.27 % expected for a normal process
    any_rule = sum(bool(f) for f in chart.flags) / 20_000
    assert any_rule < 0.05


def test_capability_against_hand_computed_values() -> None:
    x = [10.0, 10.2, 9.9, 10.1, 10.3, 9.8]
    # mean 10.05; moving ranges .2 .3 .2 .2 .5 -> MR-bar .28 -> sigma .28 / 1.128
    sigma_within = 0.28 / 1.128
    # deviations +-.05 +-.15 +-.25 -> sum of squares .175 -> s = sqrt(.175 / 5)
    s = (0.175 / 5) ** 0.5
    c = capability(x, 9.0, 11.0)
    assert c.cp == pytest.approx(2.0 / (6 * sigma_within))
    assert c.cpk == pytest.approx(0.95 / (3 * sigma_within))  # nearer the lower limit
    assert c.pp == pytest.approx(2.0 / (6 * s))
    assert c.ppk == pytest.approx(0.95 / (3 * s))
    assert c.cp == pytest.approx(1.3429, abs=1e-4) and c.cpk == pytest.approx(1.2757, abs=1e-4)


def test_capability_of_a_constant_or_single_value_is_unknown() -> None:
    assert capability([5.0, 5.0, 5.0], 4.0, 6.0).cp is None
    assert capability([5.0], 4.0, 6.0).cpk is None
    with pytest.raises(ValueError):
        capability([1.0, 2.0], 3.0, 3.0)


def test_p_chart_limits_follow_subgroup_size_and_flag_a_jump() -> None:
    chart = p_chart([2, 3, 1, 12], [50, 50, 50, 50])
    assert chart.centre == pytest.approx(18 / 200)
    sigma = (0.09 * 0.91 / 50) ** 0.5
    assert chart.ucl[0] == pytest.approx(0.09 + 3 * sigma)
    assert chart.lcl[0] == 0.0  # clipped at zero
    assert chart.flags[3] == (Rule.BEYOND_3SIGMA,)
    assert chart.flags[:3] == ((), (), ())
    wider = p_chart([9, 9], [100, 25])
    assert wider.ucl[1] - wider.centre == pytest.approx(2 * (wider.ucl[0] - wider.centre))
    with pytest.raises(ValueError):
        p_chart([3], [2])


def test_phase_two_judges_later_points_against_the_baseline_limits() -> None:
    rng = np.random.default_rng(7)
    before = rng.normal(10.0, 0.1, 30)
    after = rng.normal(10.5, 0.1, 10)  # a 5-sigma shift after the baseline
    values = np.concatenate([before, after])
    phase_two = imr_chart(values, baseline=30)
    alone = imr_chart(before)
    assert (phase_two.centre, phase_two.sigma, phase_two.ucl) == (
        alone.centre,
        alone.sigma,
        alone.ucl,
    )
    assert phase_two.baseline == 30 and imr_chart(values).baseline == 40
    assert all(Rule.BEYOND_3SIGMA in f for f in phase_two.flags[30:])
    # phase I over the same data: the shift drags the centre and loosens what counts as out
    assert imr_chart(values).centre > alone.centre + 0.1


def test_p_chart_baseline_sets_p_bar_from_the_first_subgroups() -> None:
    chart = p_chart([1, 2, 1, 2, 9], [50] * 5, baseline=4)
    assert chart.centre == 6 / 200 and chart.baseline == 4
    assert Rule.BEYOND_3SIGMA in chart.flags[4]
    with pytest.raises(ValueError, match=r"baseline must be 1\.\.5 subgroups, got 6"):
        p_chart([1, 2, 1, 2, 9], [50] * 5, baseline=6)
    with pytest.raises(ValueError, match=r"baseline must be 2\.\.3 values, got 1"):
        imr_chart([1.0, 2.0, 3.0], baseline=1)
