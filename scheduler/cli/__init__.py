"""The `fairgpu` command line: one click group with noun subgroups.

Invariants: importing this module imports no framework, no Ray and no database
driver. The group is lazy: `fairgpu jobs` imports only the module that defines
`jobs` (``commands.find``), and only `--help` (which lists them all) imports every
command module. Each command module loads what it needs inside its command
functions, so a client command (jobs, submit, job, share, cancel, logs) loads
nothing of the server (tests/cli_client/test_light_client.py). A command that needs an
extra the install lacks (`up` without `fairgpu[server]`) names it, in one line.
"""
import click


class LazyGroup(click.Group):
    """A group whose commands are named in ``commands._COMMANDS`` and imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from scheduler.cli import commands

        return sorted({c.name for c in commands.all_commands()} | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from scheduler.cli import commands

        return super().get_command(ctx, cmd_name) or commands.find(cmd_name)

    def invoke(self, ctx: click.Context):
        """A command whose extra is not installed (`pip install fairgpu` is the client only)
        says which one to install, in one line, exit 1."""
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            from scheduler.cli import commands

            extra = commands.extra_for(exc.name)
            if extra is None:
                raise
            raise click.ClickException(f"this command needs {exc.name.split('.')[0]}, which fairgpu's {extra!r} "
                                       f"extra installs: pip install 'fairgpu[{extra}]'") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fairgpu")
def main() -> None:
    """fairgpu: fair-share access to a pool of GPU slices."""
