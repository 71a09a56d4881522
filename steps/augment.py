from typing import Annotated

from zenml import step

from imgclf.augment import AugmentPolicy


@step
def augment(policy: AugmentPolicy = AugmentPolicy()) -> Annotated[AugmentPolicy, "augment_policy"]:
    """The augmentation policy from the config, as a versioned artifact that train consumes."""
    policy.build(32)  # fail here, not mid-training, if the policy cannot be built
    return policy
