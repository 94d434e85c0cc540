"""`clm evaluate-policy`, and the printed summaries of the policy's training and evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clm.commands.features import DataDir, date_option
from clm.config import load_config
from clm.settings import Settings


def format_money(value: float | None) -> str:
    from training.evaluate_policy import format_money as money

    return money(value)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _per_user(value: float | None, digits: int = 2) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"
    )


SHORT_LABELS = {
    "clm": "clm",
    "no_action": "no action",
    "random": "random eligible",
    "stage_playbook": "stage playbook",
    "top_risk_discount": "top-risk → discount",
    "oracle": "oracle",
    "restricted_oracle": "restricted oracle",
}


def margin_table(evaluation: Any) -> Table:
    """Every policy valued by the simulator's true margin (cost subtracted), per user, with the old
    CLV-valued figure beside it as a secondary column."""
    from training.evaluate_policy import MARGIN_POLICIES

    m = evaluation.margin
    title = (
        f"policy evaluation as of {evaluation.as_of} — {evaluation.policy_version}, {m.n_users:,} users, "
        "valued by the simulator's true incremental margin − cost"
    )
    if evaluation.in_sample:
        title += " (IN-SAMPLE wave)"
    table = Table(
        title=title,
        caption="oracle: each user's allowed action with the largest true value, if positive; restricted oracle: "
        "the same from a cross-fitted model of that value on our features; old: valued with our own CLV",
    )
    columns = ("policy", "value/user ± SE", "clm − it (SE)", "contacts/1k", "cost/user", "÷ oracle",
               "÷ restricted", "old: CLV/user")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    oracle, restricted = m.mean.get("oracle"), m.mean.get("restricted_oracle")
    for name in MARGIN_POLICIES:
        value = m.mean.get(name)
        clv = evaluation.value_per_1000.get(name) if name in evaluation.value_per_1000 else None
        gap = None if name == "clm" else m.mean["clm"] - value
        table.add_row(
            SHORT_LABELS[name], f"{_per_user(value)} ± {_per_user(m.se.get(name))}",
            "" if gap is None else f"{gap:+.2f} ({_per_user(m.difference_se.get(name))})",
            format_money(m.contacts_per_1000.get(name)), _per_user(m.cost_per_user.get(name)),
            _num(value / oracle if oracle else None, 2), _num(value / restricted if restricted else None, 2),
            _per_user(None if clv is None else clv / 1000.0),
        )  # fmt: skip
    return table


def lost_table(evaluation: Any, rows: int = 8) -> Table | None:
    """Where clm's value falls short of the restricted oracle's, per stage and kind of difference (missed:
    the oracle contacts, clm does not; wasted: the reverse; other action), largest first, with the action
    pair that loses most in each."""
    lost = getattr(evaluation.margin, "lost", None)
    if lost is None or lost.empty:
        return None
    cells = lost.groupby(["stage", "kind"]).agg(users=("users", "sum"), lost=("lost_per_1000", "sum"))
    top = lost.loc[lost.groupby(["stage", "kind"])["lost_per_1000"].idxmax()].set_index(["stage", "kind"])
    table = Table(
        title="where clm's value is lost against the restricted oracle (per 1,000 users, by true margin − cost)",
        caption="missed: the oracle contacts, clm does not; wasted: clm contacts, the oracle does not; "
        "other_action: both contact with different actions",
    )
    for column in ("stage", "kind", "users", "lost/1k users", "largest: clm → oracle"):
        table.add_column(column, justify="right" if column in ("users", "lost/1k users") else "left")
    for (stage, kind), row in cells.sort_values("lost", ascending=False).head(rows).iterrows():
        pair = top.loc[(stage, kind)]
        table.add_row(
            str(stage), str(kind), f"{int(row['users']):,}", f"{row['lost']:,.0f}",
            f"{pair['action']} → {pair['reference_action']} ({pair['lost_per_1000']:,.0f})",
        )  # fmt: skip
    return table


def evaluation_tables(evaluation: Any) -> list[Table]:
    """The policy-evaluation table by true margin (or, without the margin truth, the CLV-valued one) and
    the offline-estimate table, for printing."""
    from training.evaluate_policy import POLICY_LABELS

    tables = []
    if getattr(evaluation, "margin", None) is not None:
        tables.append(margin_table(evaluation))
        lost = lost_table(evaluation)
        if lost is not None:
            tables.append(lost)
    else:
        title = f"policy evaluation as of {evaluation.as_of} — {evaluation.policy_version}, {evaluation.n_users:,} users"
        title += ", valued with our own CLV (no margin truth)"
        if evaluation.in_sample:
            title += " (IN-SAMPLE wave)"
        table = Table(title=title)
        for column in (
            "policy",
            "CLV-valued value / 1,000 users",
            "contacts / 1,000",
            "cost / 1,000",
            "÷ oracle",
        ):
            table.add_column(column, justify="left" if column == "policy" else "right")
        oracle = evaluation.value_per_1000.get("oracle")
        for name, label in POLICY_LABELS.items():
            value = evaluation.value_per_1000.get(name)
            share = value / oracle if value is not None and oracle else None
            table.add_row(
                label, format_money(value), format_money(evaluation.contacts_per_1000.get(name)),
                format_money(evaluation.cost_per_1000.get(name)), _num(share, 2),
            )  # fmt: skip
        tables.append(table)
    offline = Table(
        title="offline estimates of the clm policy from the logged campaign, per logged user (IPS/DR reward: "
        "realised 30-day outcomes × our CLV)"
    )
    for column in ("IPS ± se", "SNIPS", "DR ± se", "truth by margin, same users ± se", "truth by CLV, same users",
                   "logged users", "matched"):  # fmt: skip
        offline.add_column(column, justify="right")
    o = evaluation.offline

    def per_user(key: str) -> float | None:
        value = o.get(key)
        return None if value is None else value / 1000.0

    offline.add_row(
        f"{_per_user(per_user('ips'))} ± {_per_user(per_user('ips_se'))}", _per_user(per_user("snips")),
        f"{_per_user(per_user('dr'))} ± {_per_user(per_user('dr_se'))}",
        f"{_per_user(per_user('truth_margin_on_logged'))} ± {_per_user(per_user('truth_margin_on_logged_se'))}",
        _per_user(per_user("truth_on_logged")), format_money(o.get("n_logged")), format_money(o.get("matched")),
    )  # fmt: skip
    return [*tables, offline]


def print_trained_policy(console: Console, result: Any) -> None:
    table = Table(
        title=f"{result.registered_name}/{result.version} @challenger — uplift on the held-out wave "
        f"{result.test_wave} (run {result.run_id[:8]})"
    )
    for column in ("action", "source", "contacts", "Qini", "AUUC", "Spearman vs truth", "share chosen"):
        table.add_column(column, justify="left" if column in ("action", "source") else "right")
    for action, m in result.quality.items():
        table.add_row(
            action, "model" if m.get("model") else "prior", format_money(m.get("treated_rows")), _num(m.get("qini")),
            _num(m.get("auuc")), _num(m.get("truth_spearman"), 2), f"{result.action_share.get(action, 0.0):.1%}",
        )  # fmt: skip
    console.print(table)
    o = result.offline
    console.print(
        f"  offline value per 1,000 logged users: IPS {format_money(o.ips)} ± {format_money(o.ips_se)}, DR {format_money(o.dr)} ± "
        f"{format_money(o.dr_se)}; no_action chosen for "
        f"{result.action_share.get('no_action', 0.0):.1%}; behaviour checks "
        f"{'passed' if result.behaviour_passed else 'FAILED'}; scores from {', '.join(result.scoring_models.values())}"
    )


def simulated_truth(data: Path) -> Path | None:
    """The simulator's truth beside a data directory (DIR/truth, or DIR/../raw/truth as `clm demo` lays it
    out), or None for real data."""
    return next(
        (p for p in (data / "truth", data.parent / "raw" / "truth") if (p / "effects.parquet").exists()), None
    )


def latent_to_product_stage() -> dict[str, str]:
    """The simulator's latent stage → product stage map: the CLI knows the simulator, `training` does not."""
    from simulation.params import LATENT_TO_PRODUCT_STAGE

    return dict(LATENT_TO_PRODUCT_STAGE)


def evaluate_policy(
    data: DataDir,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Evaluate at this date (default: the policy's held-out campaign wave)."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="Simulator truth directory (default: DATA/truth, DATA/../raw/truth)."),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option("--alias", help="Policy alias to evaluate (default: champion, else challenger)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every policy valued by the simulator's true incremental margin − cost per user (clm, no action, random,
    stage playbook, top-risk → discount, the oracle and the oracle restricted to the features), the old
    CLV-valued figure beside it, and offline IPS/DR estimates from the logged campaign; logged to MLflow."""
    from features.jobs import DataDirectoryError
    from training.dataset import NotEnoughHistory
    from training.evaluate_policy import evaluate_policy as run
    from training.evaluate_policy import evaluation_findings

    settings = Settings()
    config = load_config(settings.config)
    truth_dir = truth or simulated_truth(data)
    console = Console(stderr=True)
    try:
        with console.status("evaluating the policy") as status:
            evaluation = run(
                data, config=config, project_root=Path.cwd(), as_of=date_option(as_of, "--as-of"),
                truth_dir=truth_dir, latent_to_stage=None if truth_dir is None else latent_to_product_stage(),
                progress=lambda message: status.update(message), alias=alias,
            )  # fmt: skip
    except (DataDirectoryError, NotEnoughHistory, ValueError) as exc:  # ModelsMissing is a ValueError
        typer.echo(f"clm evaluate-policy: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(evaluation.as_json(), default=float))
        return
    out = Console()
    if truth_dir is None:
        out.print("no simulator truth found: only the offline estimates can be computed")
    for table in evaluation_tables(evaluation):
        out.print(table)
    for line in evaluation_findings(evaluation):
        out.print("  " + line)
