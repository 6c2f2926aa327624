"""The planner's peak-memory prediction is within ±15% of the measured peak of real LoRA training steps on
configurations that were not used to calibrate it (each measured in a fresh process; seconds each)."""
from dataclasses import replace

import pytest

from mdr_stack.bench_planner import CASES, measure_case, predict_case
from mdr_stack.hardware import load_profile
from mdr_stack.planner import memory_constants

CHECKS = ["small-ckpt-1k", "wide-vocab-bf16", "wide-vocab-1k"]  # vary model size, sequence length, batch, checkpointing, dtype


@pytest.mark.parametrize("name", CHECKS)
def test_peak_memory_within_15_percent(name):
    case = next(c for c in CASES if c.name == name)
    assert case.role == "check"  # never seen by the calibration
    result = measure_case(replace(case, steps=2))  # the second step runs with the optimizer states allocated
    predicted = predict_case(case, result["trainable_params"], memory_constants(load_profile("cpu-x86")))
    error = predicted["total"] / result["measured_gib"] - 1
    assert abs(error) <= 0.15, (name, predicted, result["measured_gib"])
