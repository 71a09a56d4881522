from zenml import pipeline

from steps import augment, deploy, evaluate, ingest, promote, quantize, register, split, train, validate


@pipeline(enable_cache=False)
def training_pipeline(data_source: str = "data/digits") -> None:
    """ingest -> validate -> split -> augment -> train -> evaluate -> quantize -> register -> promote -> deploy:
    the new version takes `staging` when the promotion rules allow, and the staging service then serves it."""
    raw = ingest(data_source)
    kept, _quarantine, _suite = validate(raw)
    splits = split(kept)
    policy, _preview = augment(splits)
    model = train(splits, policy)
    report, gate, _report_html, card = evaluate(model, splits)
    exported = quantize(model, splits)
    registered = register(model, exported, report, gate, card, splits)
    record = promote(registered, report, gate)
    deploy(record)
