"""``privml certs``: make and manage a federation's CA, server and client certificates.

Nothing here ever prints key material: keys are named by path, certificates by fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privml.cli._app import app, guarded, out

certs_app = typer.Typer(
    name="certs", no_args_is_help=True,
    help="Federation certificates: a CA, the server's certificate, one per client (mTLS).")
app.add_typer(certs_app, name="certs")

DirArg = Annotated[Path, typer.Argument(
    metavar="DIR", help="Federation folder (ca.pem, server.pem, clients/).", show_default=False)]
NameArg = Annotated[str, typer.Argument(
    metavar="NAME", help="Client name; becomes the certificate's CN and the client id.",
    show_default=False)]
DaysOpt = Annotated[int, typer.Option(help="Days the certificate stays valid.")]


def _fingerprint_of(pem_path: Path) -> str:
    import ssl

    from privml.transport.tls import cert_fingerprint

    return cert_fingerprint(ssl.PEM_cert_to_DER_cert(pem_path.read_text()))


@certs_app.command("init")
@guarded
def init_cmd(
    dir: DirArg,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="Extra server name or IP for the certificate (repeatable); localhost, "
        "127.0.0.1 and ::1 are always included.")] = None,
    days: DaysOpt = 365,
    force: Annotated[bool, typer.Option(
        help="Replace an existing CA; every certificate it issued stops working.")] = False,
) -> None:
    """Create a federation: CA, server certificate and an empty revocation list."""
    from privml.transport.tls import init_federation

    paths = init_federation(dir, hosts=host or (), days=days, force=force)
    out.print(f"federation created in {paths.dir}", highlight=False)
    for label, cert, key in (("CA", paths.ca_cert, paths.ca_key),
                             ("server", paths.server_cert, paths.server_key)):
        out.print(f"{label}: {cert}  (key {key}, mode 0600)\n"
                  f"  sha256 {_fingerprint_of(cert)}", highlight=False, soft_wrap=True)
    out.print(f"revocation list: {paths.revoked}", highlight=False, soft_wrap=True)
    out.print(f"keep {paths.ca_key} secret: it can issue certificates for this federation",
              highlight=False, soft_wrap=True)


@certs_app.command("client")
@guarded
def client_cmd(
    dir: DirArg,
    name: NameArg,
    days: DaysOpt = 365,
    force: Annotated[bool, typer.Option(
        help="Replace an existing client certificate (the old one is revoked).")] = False,
) -> None:
    """Issue a client certificate and key signed by the federation CA."""
    from privml.transport.tls import issue_client

    cert, key = issue_client(dir, name, days=days, force=force)
    out.print(f"client {name}: {cert}  (key {key}, mode 0600)\n"
              f"  sha256 {_fingerprint_of(cert)}", highlight=False, soft_wrap=True)


@certs_app.command("revoke")
@guarded
def revoke_cmd(dir: DirArg, name: NameArg) -> None:
    """Revoke a client's certificate; a running server refuses it from its next request."""
    from privml.transport.tls import revoke_client

    fingerprint = revoke_client(dir, name)
    out.print(f"revoked client {name}: sha256 {fingerprint}", highlight=False, soft_wrap=True)


@certs_app.command("list")
@guarded
def list_cmd(dir: DirArg) -> None:
    """List client certificates with fingerprint, expiry and revocation status."""
    from privml.transport.tls import list_clients

    clients = list_clients(dir)
    if not clients:
        out.print(f"no client certificates in {dir}: try `privml certs client {dir} NAME`",
                  highlight=False, soft_wrap=True)
        return
    table = Table(title=f"clients of {dir}", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("sha256 fingerprint", overflow="fold")  # folded, never cut short
    table.add_column("expires (UTC)", no_wrap=True)
    table.add_column("revoked", no_wrap=True)
    for c in clients:
        table.add_row(c.name, c.fingerprint, c.not_after.strftime("%Y-%m-%d %H:%M"),
                      "yes" if c.revoked else "no")
    out.print(table)
