from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger

from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.promotion.promote import promote_evaluated
from imgclf.promotion.record import PromotionRecord
from imgclf.promotion.rules import PromotionRules
from imgclf.registry import RegisteredVersion

logger = get_logger(__name__)


@step
def promote(
    registered: RegisteredVersion,
    evaluation: EvaluationReport,
    gate: GateResult,
    rules: PromotionRules = PromotionRules(),
) -> Annotated[PromotionRecord, "promotion_record"]:
    """Give the new version `staging` when the rules allow: it passed its gate and is not significantly
    worse than the champion evaluate compared it with (compare-and-set against the holder it saw)."""
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    record = promote_evaluated(registered.name, registered.version, evaluation, gate, rules, tracking_uri=tracking_uri)
    (logger.info if record.moved else logger.warning)("%s", record.summary())
    log_metadata(metadata=promotion_metadata(record))
    log_metadata(metadata=promotion_metadata(record), infer_model=True)
    return record


def promotion_metadata(record: PromotionRecord) -> dict:
    """What the dashboard shows on the step and on the model version."""
    return {
        f"{record.stage}_moved": record.moved,
        f"{record.stage}_decision": record.reason,
        f"{record.stage}_champion": record.champion,
    }
