from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger

from imgclf.promotion.promote import promote_version
from imgclf.promotion.record import PromotionRecord
from imgclf.promotion.rules import PromotionRules
from steps.promote import promotion_metadata

logger = get_logger(__name__)


@step
def promote_production(
    version: str, model_name: str = "image-classifier", rules: PromotionRules = PromotionRules(), data_root: str = ""
) -> Annotated[PromotionRecord, "promotion_record"]:
    """Score the staging version `version` (named, never "latest") and the production version on the staging
    version's test images, apply the rules, and move `production` compare-and-set."""
    if not str(version).strip():
        raise ValueError(
            "name the staging version to promote: parameters.version in the config, or "
            "`make promote-production VERSION=N`"
        )
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    record = promote_version(
        model_name, str(version), "production", rules, tracking_uri=tracking_uri, data_root=data_root or None
    )
    (logger.info if record.moved else logger.warning)("%s", record.summary())
    log_metadata(metadata=promotion_metadata(record))
    return record
