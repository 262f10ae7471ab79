"""The gradient oracle: hand-written backward passes against ``jax.vjp`` and finite differences,
with a diagnosis of what is wrong and where (:mod:`.check`, :mod:`.diagnose`, :mod:`.localise`),
property checks (:mod:`.properties`) and helpers for user code (:mod:`.custom`)."""

from jaxscratch.oracle.check import (
    HEADER,
    Report,
    check_loss,
    check_op,
    check_registry,
    format_report,
    format_reports,
    format_summary,
    iter_registry,
)
from jaxscratch.oracle.custom import (
    assert_backward,
    assert_registry,
    check_custom_vjp,
    report_dict,
    report_json,
)
from jaxscratch.oracle.diagnose import KINDS, Diagnosis
from jaxscratch.oracle.localise import Location
from jaxscratch.oracle.properties import F32_BOUND, PROPERTY_NAMES, Check

__all__ = [
    "F32_BOUND",
    "HEADER",
    "KINDS",
    "PROPERTY_NAMES",
    "Check",
    "Diagnosis",
    "Location",
    "Report",
    "assert_backward",
    "assert_registry",
    "check_custom_vjp",
    "check_loss",
    "check_op",
    "check_registry",
    "format_report",
    "format_reports",
    "format_summary",
    "iter_registry",
    "report_dict",
    "report_json",
]
