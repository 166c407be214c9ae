"""HTML documents outside the web UI's pages, rendered from templates/ like the pages are: the
subject access report (the CLI writes it, the API returns it) and the public opt-out form."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
_environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def access_report_html(report: dict) -> str:
    """The subject access report (``Privacy.subject_access``) as one self-contained HTML page."""
    return _environment.get_template("access_report.html").render(report=report)


def public_optout_html() -> str:
    """The public opt-out form; its script is a separate file (the service's CSP allows no inline script)."""
    return _environment.get_template("public_optout.html").render()


def public_optout_script() -> str:
    """The opt-out form's script."""
    return (HERE / "static" / "public_optout.js").read_text()
