"""Privacy commands: the `optout`, `consent` and `privacy` groups and `purge`; each writes to the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facefinder.interfaces.cli.common import (
    CatalogId,
    FaceIdsOpt,
    FaceOpt,
    JsonOpt,
    ThresholdOpt,
    YesOpt,
    confirm,
    engine,
    errors,
    fail,
    matches_table,
    print_table,
    say,
)
from facefinder.interfaces.cli.delete import ConfirmAllOpt, ExpandOpt, chosen_faces, listed_table

optout_app = typer.Typer(
    help="Opt-out by face: people who asked to be left out of every collection.", no_args_is_help=True
)
consent_app = typer.Typer(
    help="Consent records of consented galleries, and withdrawal (which erases).", no_args_is_help=True
)
privacy_app = typer.Typer(help="Subject access reports, privacy settings and status.", no_args_is_help=True)


# ----- opt-out --------------------------------------------------------------------------------
@optout_app.command("add")
def optout_add(
    photos: Annotated[
        list[Path], typer.Argument(help="One or more photos of the person (more photos catch more of their faces).")
    ],
    reference: Annotated[str, typer.Option(help="Your reference for the request (e.g. a ticket number).")] = "",
    face: FaceOpt = None,
    keep_photo: Annotated[
        bool, typer.Option("--keep-photo", help="Do not delete the photo files once the templates are made.")
    ] = False,
    expand: ExpandOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Put a person on the opt-out list. Only their face template is kept: the photo files are
    overwritten and deleted unless --keep-photo. Lists the faces already held that match, for review
    (with --expand, every face likely theirs; then `optout erase ID --expand`)."""
    with errors(), engine() as ff:
        result = ff.privacy.optout_add(
            photos, reference=reference, face=face, delete_photos=not keep_photo, expand=expand
        )
    if as_json:
        print(
            json.dumps(
                {
                    "id": result.id,
                    "templates": result.templates,
                    "photo_deleted": result.photo_deleted,
                    "matches": [m.to_dict() for m in result.matches],
                }
            )
        )
    say(
        f"opt-out {result.id}: {result.templates} face template(s) on the list"
        + ("; photo file(s) deleted" if result.photo_deleted else "")
    )
    if result.matches:
        (listed_table if expand else matches_table)(
            result.matches,
            f"{len(result.matches)} faces held match: hidden from search now; review, "
            f"then `facefinder optout erase {result.id}{' --expand' if expand else ''}`",
        )
    else:
        say("no face held matches")


@optout_app.command("list")
def optout_list(as_json: JsonOpt = False) -> None:
    """The opt-out list (no photos or templates are shown: there are only templates)."""
    with engine() as ff:
        rows = ff.privacy.optout_list()
    if as_json:
        print(
            json.dumps(
                [
                    {**vars(r), "created_at": str(r.created_at), "erased_at": str(r.erased_at) if r.erased_at else None}
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table("id", "reference", "channel", "templates", "added", "by", "held faces erased")
    for r in rows:
        table.add_row(
            str(r.id),
            r.reference,
            r.channel,
            str(r.templates),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            r.created_by,
            f"{r.erased_at:%Y-%m-%d} by {r.erased_by}" if r.erased_at else "not yet",
        )
    print_table(table)


@optout_app.command("review")
def optout_review(optout_id: CatalogId, expand: ExpandOpt = False, as_json: JsonOpt = False) -> None:
    """The faces held now that match an opt-out (with --expand, every face likely the person's)."""
    with errors(), engine() as ff:
        matches = ff.privacy.optout_matches(optout_id, expand=expand)
    if as_json:
        print(json.dumps([m.to_dict() for m in matches], indent=2))
        return
    if matches:
        (listed_table if expand else matches_table)(matches, f"opt-out {optout_id}: {len(matches)} faces held match")
    else:
        say(f"opt-out {optout_id}: no face held matches")


@optout_app.command("erase")
def optout_erase(
    optout_id: CatalogId,
    face_id: FaceIdsOpt = None,
    expand: ExpandOpt = False,
    confirm_all: ConfirmAllOpt = False,
    yes: YesOpt = False,
) -> None:
    """Erase the faces held that match an opt-out (all, or the --face-id ones kept after review). With
    --expand: every face likely the person's is listed, only --face-id or --confirm-all ones are erased,
    and their templates join the opt-out's."""
    with errors(), engine() as ff:
        matches = ff.privacy.optout_matches(optout_id, expand=expand)
        if matches:
            shown = listed_table if expand else matches_table
            shown(matches, f"opt-out {optout_id}: {len(matches)} faces held match")
        if expand:
            chosen = chosen_faces([m.face_id for m in matches], face_id, confirm_all, yes) if matches else []
            if chosen is None:
                return
        else:
            chosen = face_id or [m.face_id for m in matches]
            if chosen:
                confirm(f"Erase {len(chosen)} faces?", yes)
        erased = ff.privacy.optout_erase(optout_id, chosen if expand else face_id, expand=expand)
    say(f"opt-out {optout_id}: erased {erased.faces} faces and {erased.images} photos left without a face")


@optout_app.command("remove")
def optout_remove(
    optout_id: CatalogId, note: Annotated[str, typer.Option(help="Why (logged).")] = "", yes: YesOpt = False
) -> None:
    """Take a person off the opt-out list (request withdrawn, or a public submission rejected)."""
    confirm(f"Remove opt-out {optout_id}? Their faces become searchable again.", yes)
    with errors(), engine() as ff:
        ff.privacy.optout_remove(optout_id, note)
    say(f"removed opt-out {optout_id}")


# ----- consent --------------------------------------------------------------------------------
@consent_app.command("add")
def consent_add(
    consent_id: Annotated[str, typer.Argument(help="The id photos carry in their provenance (consent_id).")],
    subject: Annotated[str, typer.Option(help="Who consented (a name, or a reference to the signed form).")],
    scope: Annotated[str, typer.Option(help="What they consented to.")],
    given_at: Annotated[str, typer.Option(help="When (ISO 8601 date or time).")],
    collection: Annotated[Optional[str], typer.Option(help="The collection the consent is for.")] = None,
) -> None:
    """Record a consent."""
    with errors(), engine() as ff:
        ff.privacy.consent_record(consent_id, subject, scope, given_at, collection)
    say(f"recorded consent {consent_id}")


@consent_app.command("list")
def consent_list(as_json: JsonOpt = False) -> None:
    """Consent records, with the photos held under each."""
    with engine() as ff:
        rows = ff.privacy.consents()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        **vars(r),
                        "recorded_at": str(r.recorded_at),
                        "withdrawn_at": str(r.withdrawn_at) if r.withdrawn_at else None,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table("consent", "subject", "scope", "given", "collection", "photos", "withdrawn")
    for r in rows:
        table.add_row(
            r.consent_id,
            r.subject,
            r.scope,
            r.given_at,
            r.collection or "-",
            str(r.images),
            f"{r.withdrawn_at:%Y-%m-%d} by {r.withdrawn_by}" if r.withdrawn_at else "-",
        )
    print_table(table)


@consent_app.command("withdraw")
def consent_withdraw(
    consent_id: str, note: Annotated[Optional[str], typer.Option(help="Logged with it.")] = None, yes: YesOpt = False
) -> None:
    """Record that a consent was withdrawn and erase every photo that carries it."""
    with errors(), engine() as ff:
        from facefinder.services.privacy.consent import linked_images

        count = len(linked_images(ff.store.catalog, consent_id))
        confirm(f"Withdraw consent {consent_id} and erase the {count} photos under it?", yes)
        erased = ff.privacy.consent_withdraw(consent_id, note)
    say(f"consent {consent_id} withdrawn: erased {erased.images} photos and {erased.faces} faces")


# ----- retention ------------------------------------------------------------------------------
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what has expired.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase every photo older than its collection's retention period (logged)."""
    with engine() as ff:
        report = ff.privacy.purge(dry_run=dry_run)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would erase" if dry_run else "erased"
    for c in report.collections:
        if c.retention_days is None:
            say(f"{c.collection}: [red]no retention period[/red]; set one with `facefinder collections set`")
        else:
            say(
                f"{c.collection}: {verb} {c.images} photos, {c.faces} faces ingested before {c.cutoff} "
                f"({c.retention_days} days)"
            )
    say(f"purge {'(dry run) ' if dry_run else ''}done: {report.images} photos, {report.faces} faces")


# ----- subject access and settings ------------------------------------------------------------
@privacy_app.command("access")
def privacy_access(
    probe: Annotated[Path, typer.Argument(help="A photo of the person asking.")],
    approved_by: Annotated[str, typer.Option(help="The admin who approved the request (logged).")],
    out: Annotated[Path, typer.Option(help="Folder for subject-access.json and subject-access.html.")],
    face: FaceOpt = None,
    threshold: ThresholdOpt = None,
) -> None:
    """Export what is held on a person: faces, photos' sources and provenance, the searches that
    returned them. Writes JSON and a readable HTML report."""
    from facefinder.interfaces.web.documents import access_report_html

    with errors(), engine() as ff:
        # The report holds face thumbnails; erasure reaches only what facefinder keeps itself, so it
        # is never written among the data directory's files, where it would look like one of them.
        if out.expanduser().resolve().is_relative_to(ff.data_dir.resolve()):
            fail(
                f"--out: {out} is inside the data directory {ff.data_dir}; choose a folder outside it "
                f"(the report holds face thumbnails that erasing the person would not reach)"
            )
        report = ff.privacy.subject_access(probe, approved_by, face, threshold)
    out.mkdir(parents=True, exist_ok=True)
    (out / "subject-access.json").write_text(json.dumps(report, indent=2))
    (out / "subject-access.html").write_text(access_report_html(report))
    say(f"{len(report['faces'])} faces held; wrote {out / 'subject-access.json'} and {out / 'subject-access.html'}")


@privacy_app.command("status")
def privacy_status(as_json: JsonOpt = False) -> None:
    """The privacy threshold, the opt-out list, the public form, and collections without a policy."""
    from facefinder.services.calibration import PRIVACY_FMR

    with engine() as ff:
        status = {
            "threshold": ff.privacy.threshold,
            "threshold_false_match_rate": PRIVACY_FMR,
            "optouts": len(ff.privacy.optout_list()),
            "public_optout_form": ff.privacy.public_optout_enabled(),
            "collections_without_retention": [c.name for c in ff.collections() if not c.retention_days],
        }
    if as_json:
        print(json.dumps(status, indent=2))
        return
    for key, value in status.items():
        say(f"{key}: {value}")


@privacy_app.command("public-optout")
def privacy_public_optout(state: Annotated[str, typer.Argument(help="on | off")]) -> None:
    """Switch the public opt-out form of the server (POST /api/privacy/public/optout) on or off."""
    if state not in ("on", "off"):
        fail("state: on or off")
    with engine() as ff:
        ff.privacy.set_public_optout(state == "on")
    say(f"public opt-out form: {state}")
