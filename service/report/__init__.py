"""Campaign reports: treated vs hold-out with intervals (``analysis``), written as Markdown or
HTML with charts (``render``); ``python -m service.report`` is the CLI (``__main__``)."""

from service.report.analysis import (
    WAKE_STAGES,
    ArmStats,
    BadReportRequest,
    CampaignReport,
    ChannelStats,
    Comparison,
    Estimate,
    GainPoint,
    campaign_report,
    gain_curve,
)
from service.report.render import gain_chart, segment_chart, write_report

__all__ = [
    "WAKE_STAGES",
    "ArmStats",
    "BadReportRequest",
    "CampaignReport",
    "ChannelStats",
    "Comparison",
    "Estimate",
    "GainPoint",
    "campaign_report",
    "gain_chart",
    "gain_curve",
    "segment_chart",
    "write_report",
]
