"""The `fairgpu` command line: one click group with noun subgroups.

Invariants: importing this module imports no framework, no Ray and no database
driver, so `fairgpu --help` stays fast. Each subcommand module loads what it
needs inside its command functions.
"""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairgpu")
def main() -> None:
    """fairgpu: fair-share access to a pool of GPU slices."""


def _register() -> None:
    from scheduler.cli import commands

    for command in commands.all_commands():
        main.add_command(command)


_register()
