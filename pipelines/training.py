from zenml import pipeline

from steps import augment, deploy, evaluate, ingest, quantize, register, split, train, validate


@pipeline(enable_cache=False)
def training_pipeline(data_source: str = "data/digits") -> None:
    """ingest -> validate -> split -> augment -> train -> evaluate -> quantize -> register -> deploy."""
    raw = ingest(data_source)
    kept, _quarantine, _suite = validate(raw)
    splits = split(kept)
    policy, _preview = augment(splits)
    model = train(splits, policy)
    report, gate, _report_html, card = evaluate(model, splits)
    exported = quantize(model, splits)
    registered = register(model, exported, report, card)
    deploy(registered, gate)
