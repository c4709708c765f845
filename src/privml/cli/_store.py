"""``privml store``: the sealed local store from the command line.

The key is a passphrase (prompted, never echoed, or ``--passphrase-env NAME``), a key kept
in the OS keyring (``--keyring NAME``), a key file (``--key-file``), or ``PRIVML_STORE_KEY``.
Values never pass through the terminal unless asked: ``put`` reads a file (or stdin),
``get`` writes a file (or stdout with ``-o -``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from privml._exceptions import ConfigError
from privml.cli._app import app, guarded, out
from privml.store import LocalStore

store_app = typer.Typer(
    name="store", no_args_is_help=True,
    help="The sealed local store: values encrypted at rest, versioned, tamper-evident.")
app.add_typer(store_app, name="store")

StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="Store folder (default $PRIVML_HOME/store).", show_default=False)]
KeyFileOpt = Annotated[Path | None, typer.Option(
    "--key-file", help="A file with the 32-byte key (raw or base64).", show_default=False)]
PassEnvOpt = Annotated[str | None, typer.Option(
    "--passphrase-env", help="Read the passphrase from this environment variable instead "
    "of a prompt.", show_default=False)]
KeyringOpt = Annotated[str | None, typer.Option(
    "--keyring", metavar="NAME", help="Use the key kept in the OS keyring under this name "
    "(`init` makes one).", show_default=False)]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Record name.",
                                        show_default=False)]


def _open(store: Path | None, key_file: Path | None, passphrase_env: str | None,
          keyring_name: str | None, *, create: bool = False,
          confirm: bool = False) -> LocalStore:
    from privml._home import privml_home
    from privml.store import ENV_KEY, key_from_file, key_from_keyring

    path = store or privml_home() / "store"
    key: bytes | str | None
    if keyring_name is not None:
        key = key_from_keyring(keyring_name, create=create)
    elif key_file is not None:
        key = key_from_file(key_file)
    elif passphrase_env is not None:
        key = _env_secret(passphrase_env)
    elif os.environ.get(ENV_KEY):
        key = None
    else:
        key = typer.prompt("Store passphrase", hide_input=True,
                           confirmation_prompt=confirm)
    return LocalStore(path, key=key, create=create)


def _env_secret(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigError(f"the environment variable {variable} is empty or unset")
    return value


@store_app.command("init")
@guarded
def init_cmd(store: StoreOpt = None, key_file: KeyFileOpt = None,
             passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None) -> None:
    """Create a store (or check the key of an existing one)."""
    with _open(store, key_file, passphrase_env, keyring_name, create=True, confirm=True) as st:
        out.print(f"store {st.path}: {len(st.list())} records")


@store_app.command("put")
@guarded
def put_cmd(name: NameArg,
            file: Annotated[Path, typer.Argument(help="File to seal ('-': stdin).")],
            store: StoreOpt = None, key_file: KeyFileOpt = None,
            passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None) -> None:
    """Seal a file as the next version of NAME."""
    with _open(store, key_file, passphrase_env, keyring_name) as st:
        if str(file) == "-":
            version = st.put(name, sys.stdin.buffer)
        else:
            try:
                fh = file.open("rb")
            except OSError as exc:
                raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
            with fh:
                version = st.put(name, fh)
    out.print(f"{name} v{version}")


@store_app.command("get")
@guarded
def get_cmd(name: NameArg,
            output: Annotated[Path, typer.Option("-o", "--output",
                                                 help="Where to write ('-': stdout).")],
            version: Annotated[int | None, typer.Option(help="A version (default: latest).",
                                                        show_default=False)] = None,
            store: StoreOpt = None, key_file: KeyFileOpt = None,
            passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None) -> None:
    """Open NAME and write its plaintext. Nothing is written if it fails its check: the
    value is streamed to a temporary file (bounded memory) that replaces OUTPUT, or is
    copied to stdout, only once every segment has opened."""
    import shutil
    import tempfile

    to_stdout = str(output) == "-"
    with _open(store, key_file, passphrase_env, keyring_name) as st, \
            tempfile.NamedTemporaryFile(dir=None if to_stdout else output.parent or None,
                                        prefix=f".{output.name}.", suffix=".tmp",
                                        delete=False) as tmp:
        try:
            try:
                for piece in st.open(name, version, views=True):
                    tmp.write(piece)
            except KeyError:
                raise ConfigError(f"no record {name!r}" + (
                    "" if version is None else f" version {version}")) from None
            tmp.flush()
            if to_stdout:
                tmp.seek(0)
                shutil.copyfileobj(tmp, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                os.replace(tmp.name, output)
        finally:
            Path(tmp.name).unlink(missing_ok=True)


@store_app.command("ls")
@guarded
def ls_cmd(store: StoreOpt = None, key_file: KeyFileOpt = None,
           passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None) -> None:
    """List the records and their latest versions."""
    with _open(store, key_file, passphrase_env, keyring_name) as st:
        table = Table("name", "latest version", "versions")
        for name, latest in st.list().items():
            table.add_row(name, str(latest), str(len(st.versions(name))))
    out.print(table)


@store_app.command("rm")
@guarded
def rm_cmd(name: NameArg, store: StoreOpt = None, key_file: KeyFileOpt = None,
           passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None) -> None:
    """Delete every version of NAME."""
    with _open(store, key_file, passphrase_env, keyring_name) as st:
        n = st.delete(name)
    if n == 0:
        raise ConfigError(f"no record {name!r}")
    out.print(f"removed {name} ({n} versions)")


@store_app.command("rotate-key")
@guarded
def rotate_cmd(store: StoreOpt = None, key_file: KeyFileOpt = None,
               passphrase_env: PassEnvOpt = None,
           keyring_name: KeyringOpt = None,
               new_key_file: Annotated[Path | None, typer.Option(
                   help="The new key file (default: prompt for a new passphrase).",
                   show_default=False)] = None,
               new_passphrase_env: Annotated[str | None, typer.Option(
                   help="Read the new passphrase from this environment variable.",
                   show_default=False)] = None,
               new_keyring: Annotated[str | None, typer.Option(
                   metavar="NAME", help="Move to a new key kept in the OS keyring under "
                   "NAME (made if absent).", show_default=False)] = None) -> None:
    """Re-wrap every record's data key under a new key (the data is not rewritten)."""
    from privml.store import key_from_file, key_from_keyring

    with _open(store, key_file, passphrase_env, keyring_name) as st:
        new: bytes | str
        if new_keyring is not None:
            new = key_from_keyring(new_keyring, create=True)
        elif new_key_file is not None:
            new = key_from_file(new_key_file)
        elif new_passphrase_env is not None:
            new = _env_secret(new_passphrase_env)
        else:
            new = typer.prompt("New passphrase", hide_input=True, confirmation_prompt=True)
        st.rotate_key(new)
        out.print(f"rotated the key of {st.path} ({len(st.list())} records)")
