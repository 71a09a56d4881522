from typing import Annotated

from PIL import Image
from zenml import step
from zenml.integrations.pillow.materializers import PillowImageMaterializer

from imgclf.augment.policy import AugmentPolicy
from imgclf.augment.preview import preview_grid, preview_images
from imgclf.data.manifest import DatasetManifest

PREVIEW_IMAGES = 8  # columns: training images, one class after another
PREVIEW_ROWS = 4  # rows: independent draws of the policy
PREVIEW_SIZE = 96  # px; the preview does not depend on the model's input size


@step(output_materializers={"augment_preview": PillowImageMaterializer})
def augment(
    manifest: DatasetManifest, policy: AugmentPolicy = AugmentPolicy()
) -> tuple[Annotated[AugmentPolicy, "augment_policy"], Annotated[Image.Image, "augment_preview"]]:
    """The augmentation policy from the config, as a versioned artifact that train consumes, and a
    PNG grid of it applied to a few training images (shown in the dashboard). Drawing the grid runs
    the policy, so a policy that cannot run fails here, not mid-training."""
    images = preview_images(manifest, PREVIEW_IMAGES, PREVIEW_SIZE)
    return policy, preview_grid(images, policy, rows=PREVIEW_ROWS)
