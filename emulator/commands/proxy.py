"""``posemu proxy``: the ISO 8583-aware fault proxy in front of any host (docs/proxy.md)."""

from __future__ import annotations

import click

from emulator.commands._bridge import bridge_options, loopback_only, run_bridge
from emulator.commands._exit import exit_epilog
from emulator.commands._pcap import check_pcap, pcap_options
from faults.control import Controller
from protocol.errors import UsageError
from protocol.specs import PROFILES, get_profile

RULE_HELP = ("Message rules (--rule, or --fault rule:…): ACTION[:k=v,…] with ACTION respond, delay, no-response, "
             "drop, drop-response, close, wrong-stan, garbage, refuse, duplicate, corrupt, rewrite; selected by "
             "mti=0200+0400, pc=31 (processing code prefix), fN=VALUE, nth=N, first/every/count/probability; "
             "rc=96, delay=30, mode=truncated, setN=VALUE, unset=54, dir=request|response.")


@click.command("proxy", epilog=exit_epilog("stopped (Ctrl-C, SIGTERM or --for)", None,
                                             environment="an address cannot be listened on"),
               help="Run an ISO 8583-aware fault proxy between a terminal and its host: every network fault "
                    "of the catalogue by name, and message rules. " + RULE_HELP)
@click.option("--listen", default="127.0.0.1:8583", show_default=True, metavar="HOST:PORT",
              help="Where the terminal connects (loopback; port 0 picks one).")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The host the proxy forwards to.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default=None,
              help="The ISO 8583 profile (envelope and fields) the terminal and host speak [default: cup, or "
                   "the dialect of --config].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Speak the host dialect of this terminal config ([host]: spec overrides, envelope, TPDU, "
                   "application header), as `posemu host --config` does.")
@click.option("--rule", "rules", multiple=True, metavar="ACTION[:k=v,…]",
              help="A message rule from the start (repeatable), e.g. respond:rc=96,mti=0200.")
@pcap_options
@bridge_options
def command(listen: str, upstream: str, profile: str | None, config_file: str | None, rules: tuple[str, ...],
            faults: tuple[str, ...],
            scenario: str | None, control: str | None, allow_remote: bool, trace_path: str | None,
            duration: float | None, seed: int, verbose: int, pcap_path: str | None = None,
            pcap_clear: bool = False) -> None:
    from emulator.commands._pcap import streaming_capture
    from faults.wire import MessageProxy, parse_upstream
    from hardware.clock import RealClock

    listen_at = loopback_only(listen, "--listen", allow_remote)
    target = parse_upstream(upstream)
    if config_file:
        from emulator import config as configmod

        cfg = configmod.load(config_file)
        if profile is not None and profile != cfg.profile:
            raise UsageError(f"--profile {profile} and the config's profile {cfg.profile} disagree; give one")
        prof = cfg.wire_profile()
        label = f"{cfg.profile} dialect of {config_file}"
    else:
        prof = get_profile(profile or "cup")
        label = profile or "cup"
    pcap_out = check_pcap(pcap_path, pcap_clear)
    all_faults = tuple(f"rule:{r}" for r in rules) + faults
    capture = streaming_capture(pcap_out, pcap_clear)
    rec = capture.__enter__()

    def make() -> Controller:
        proxy = MessageProxy(target, prof, clock=RealClock(), listen=listen_at, seed=seed)
        if rec is not None:
            proxy.wire_observers.append(rec)
        return proxy

    def banner(tool: Controller) -> str:
        st = tool.status()
        return f"posemu proxy: listening on {st['listen']} → {st['upstream']} (profile {label})"

    try:
        run_bridge(make, faults=all_faults, scenario=scenario, control=control, allow_remote=allow_remote,
                   trace_path=trace_path, duration=duration, verbose=verbose, banner=banner)
    finally:
        capture.__exit__(None, None, None)

