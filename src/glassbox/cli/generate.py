"""``glassbox generate RUN``: text from a trained byte-level LM, with speculative decoding or a cascade."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from glassbox.cli.common import print_json

RULES = "chow, diff, opt, token-v1, token-v2, token-v3"


def generate(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A run folder with a text (LM) model.")],
    prompt: Annotated[str, typer.Option(metavar="TEXT", help="The text to continue.")] = "def ",
    max_new: Annotated[int, typer.Option("--max-new", metavar="N", help="Bytes to generate.")] = 200,
    draft: Annotated[
        str | None,
        typer.Option(metavar="RUN|lookup", help="A smaller LM run as the draft, or 'lookup' (n-grams)."),
    ] = None,
    temperature: Annotated[float, typer.Option(metavar="T", help="0 is greedy.")] = 0.0,
    top_k: Annotated[int | None, typer.Option(metavar="K")] = None,
    top_p: Annotated[float | None, typer.Option(metavar="P")] = None,
    gamma: Annotated[str, typer.Option(metavar="N|auto", help="Draft tokens per target call.")] = "auto",
    rule: Annotated[
        str | None, typer.Option(metavar="RULE", help=f"Speculative cascade deferral rule: {RULES}.")
    ] = None,
    lenience: Annotated[float, typer.Option(metavar="A", help="The cascade rule's lenience.")] = 0.1,
    seed: Annotated[int, typer.Option(metavar="S", help="Seed of the sampler.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print text and statistics as JSON.")] = False,
) -> None:
    """Example: glassbox generate runs/<lm> --draft runs/<lm-draft> --prompt "def "

    Continue --prompt with RUN's language model. With --draft, speculative
    decoding: the draft proposes, the target checks a run of tokens per call;
    greedy output is the target's own, sampled output follows the target's
    distribution exactly. With --rule, a speculative cascade samples from the
    rule's mix of draft and target instead (needs --temperature > 0).
    """
    import torch

    from glassbox.errors import UserError
    from glassbox.generate.cascades import cascade_generate
    from glassbox.generate.speculative import PromptLookupDrafter, speculative_generate

    if gamma != "auto" and not gamma.isdigit():
        raise UserError(f"--gamma {gamma!r}: give a whole number or auto")
    target = _lm(run)
    if draft == "lookup":
        drafter = PromptLookupDrafter()
    else:
        drafter = None if draft is None else _lm(draft)
    if rule is not None and not isinstance(drafter, torch.nn.Module):
        raise UserError("--rule needs a draft model: add --draft runs/<smaller-lm>")
    ids = torch.tensor([list(prompt.encode("utf-8"))])
    if ids.shape[1] == 0:
        raise UserError("--prompt is empty; give some text to continue")
    g = torch.Generator().manual_seed(seed)
    options = dict(max_new_tokens=max_new, temperature=temperature, top_k=top_k, top_p=top_p, generator=g,
                   gamma=gamma if gamma == "auto" else int(gamma))  # fmt: skip
    if rule is not None:
        out, stats = cascade_generate(target, drafter, ids, rule=rule, lenience=lenience, **options)
    else:
        out, stats = speculative_generate(target, drafter, ids, **options)
    text = bytes(out[0, ids.shape[1] :].tolist()).decode("utf-8", errors="replace")
    stats.pop("accepted_at", None)
    if as_json:
        print_json({"prompt": prompt, "text": text, "stats": stats})
        return
    print(prompt + text)
    acc = stats["acceptance"]
    print(
        f"-- {stats['new_tokens']} bytes in {stats['seconds']:.2f} s ({stats['tokens_per_second']:.0f}/s),"
        f" {stats['tokens_per_target_call']:.2f} per target call"
        + ("" if acc is None else f", draft acceptance {acc:.2f}")
    )


def _lm(path: str) -> Any:
    """The LM saved in run folder ``path``; a one-line error for anything else."""
    from pathlib import Path

    from glassbox.errors import UserError
    from glassbox.nn import load_model

    folder = Path(path)
    if not (folder / "model.json").is_file():
        raise UserError(f"{path} holds no model (no model.json); give a run folder of a trained LM")
    model = load_model(folder)
    if not model.lm:
        raise UserError(f"{path} is a {model.kind} classifier, not a language model; train recipes/lm.yaml")
    return model


def register(app: typer.Typer) -> None:
    app.command("generate", short_help="Text from an LM run (speculative decoding, cascades).")(generate)
