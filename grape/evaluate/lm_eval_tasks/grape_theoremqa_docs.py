"""TheoremQA rows the text-only models can answer: those without a picture (the answer as text for exact_match)."""


def text_only(dataset):
    return dataset.filter(lambda d: not d.get("Picture")).map(lambda d: {"Answer": str(d["Answer"])})
