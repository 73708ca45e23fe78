#!/usr/bin/env python3
"""Keylime's own quote and measured-boot checks on the appraisal benchmark's evidence.

Run by `cargo bench -p strata-attest --bench appraise` (which reads the JSON lines this prints);
can be run alone:

    target/keylime-venv/bin/python3 crates/strata-attest/benches/keylime_bench.py [--seconds S]
    target/keylime-venv/bin/python3 crates/strata-attest/benches/keylime_bench.py --write-refstate

The evidence is `benches/data/` (written by `cargo run -p strata-agent --example
bench_evidence`): the tpm2-tools files of each quote (`tpm2-{ecc,rsa}/`: what Keylime's agent
sends) and the binary event log. The measured-boot reference state `keylime-refstate.json` is
made from that log by Keylime's own generator (`keylime.policy.create_mb_policy`, what
`keylime-policy create measured-boot` runs), with `--write-refstate`.

What is timed, per appraisal, in this process:

* `full`: `keylime.tpm.tpm_main.Tpm().check_quote(...)`, the call Keylime's verifier makes for
  every attestation (`cloud_verifier_common.process_quote_response`): the quote's signature,
  nonce and PCR digest (`tpm_util.checkquote`), the TPM clock against the previous quote, the
  event log parsed by `tpm2_eventlog` (a subprocess, as Keylime runs it) and enriched, its replay
  compared with every quoted measured-boot PCR, and the log evaluated against the reference state
  with Keylime's `example` measured-boot policy (as `measured_boot_evaluate = always` does on
  every attestation, and the default `once` on an agent's first).
* `steady`: the same call as Keylime's default configuration makes it after the first
  attestation of an agent (`measured_boot_evaluate = once`, `count = 1`): everything above but
  the policy evaluation (the log is still parsed by `tpm2_eventlog` and replayed every time).
* `quote`: the same call with `skip_pcr_check=True`: quote signature, nonce, PCR digest and
  clock only, no event log.

Rates are given per wall second and per CPU second (this process plus its `tpm2_eventlog`
children, from `os.times()`); the CPU-second rate is the per-core figure.

Exit status 3 (and a hint on stderr) when Keylime cannot be imported.
"""

import argparse
import base64
import json
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REFSTATE = os.path.join(DATA, "keylime-refstate.json")
LOG = os.path.join(DATA, "binary_bios_measurements")

# Keylime reads its verifier options from /etc/keylime/verifier.conf or KEYLIME_VERIFIER_*
# variables (which win); `check` below sets measured_boot_evaluate per case.
os.environ["KEYLIME_VERIFIER_MEASURED_BOOT_POLICY_NAME"] = "example"
os.environ["KEYLIME_VERIFIER_MEASURED_BOOT_EVALUATE"] = "always"

INSTALL = """Keylime is not importable by {python}: {error}
Install it (and what its verifier needs) in a venv, then re-run the benchmark:
    apt-get install -y tpm2-tools libefivar1 python3-venv python3-gpg
    /usr/bin/python3 -m venv --system-site-packages target/keylime-venv
    target/keylime-venv/bin/pip install keylime cryptography pyyaml packaging lark pyasn1 \\
        pyasn1-modules jsonschema typing-extensions tornado requests sqlalchemy alembic psutil jinja2
(the keylime wheel declares no dependencies; python3-gpg comes from Debian because PyPI's gpg
needs gpgme headers to build)"""


def import_keylime():
    try:
        # Keylime logs every step at INFO; a production verifier writes that to a file or the
        # journal. Dropping it here only makes Keylime faster.
        logging.disable(logging.INFO)
        from keylime.agentstates import AgentAttestState, TPMClockInfo
        from keylime.common.algorithms import Hash
        from keylime.mba import mba
        from keylime.tpm import tpm2_objects
        from keylime.tpm.tpm_main import Tpm

        mba.load_imports(skip_custom_policies=True)
        return AgentAttestState, TPMClockInfo, Hash, Tpm, tpm2_objects
    except Exception as e:  # pylint: disable=broad-except
        print(INSTALL.format(python=sys.executable, error=repr(e)), file=sys.stderr)
        sys.exit(3)


def write_refstate():
    import_keylime()
    from keylime.policy import create_mb_policy  # pylint: disable=import-outside-toplevel

    args = argparse.Namespace(eventlog_file=LOG, without_secureboot=False, output=os.devnull)
    refstate = create_mb_policy.create_mb_refstate(args)
    if not refstate:
        sys.exit("keylime could not make a reference state from the log")
    with open(REFSTATE, "w", encoding="utf-8") as f:
        json.dump(refstate, f, indent=2)
        f.write("\n")
    print(f"wrote {REFSTATE}")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def version(dist):
    try:
        from importlib.metadata import version as v  # pylint: disable=import-outside-toplevel

        return v(dist)
    except Exception:  # pylint: disable=broad-except
        return "unknown"


def timed(fn, seconds, min_iterations):
    for _ in range(2):  # warm-up (imports, caches)
        fn()
    n = 0
    t0 = time.perf_counter()
    c0 = os.times()
    while True:
        fn()
        n += 1
        wall = time.perf_counter() - t0
        if wall >= seconds and n >= min_iterations:
            break
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    children = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return {
        "iterations": n,
        "wall_s": wall,
        "cpu_s": cpu + children,
        "children_cpu_s": children,
        "per_wall_s": n / wall,
        "per_cpu_s": n / (cpu + children) if cpu + children > 0 else None,
    }


def bench(alg, seconds, refstate_text, keylime):
    AgentAttestState, TPMClockInfo, Hash, Tpm, tpm2_objects = keylime
    d = os.path.join(DATA, f"tpm2-{alg}")
    attest = read(os.path.join(d, "quote.msg"))
    # The agent sends "r" + base64(TPMS_ATTEST) : base64(TPMT_SIGNATURE) : base64(tpm2-tools PCRs).
    quote = "r" + ":".join(
        base64.b64encode(read(os.path.join(d, f))).decode() for f in ("quote.msg", "quote.sig", "quote.pcrs")
    )
    ak_tpm = base64.b64encode(read(os.path.join(d, "ak.pub"))).decode()
    nonce = read(os.path.join(d, "nonce.bin"))
    log_b64 = base64.b64encode(read(LOG)).decode()

    clock = tpm2_objects.get_tpms_attest_clock_info(attest)
    previous = dict(clock)
    previous["clock"] = clock["clock"] - 1  # the previous round's quote, same boot
    state = AgentAttestState(f"bench-{alg}")
    tpm = Tpm()

    def check(skip_pcr_check, count, evaluate):
        os.environ["KEYLIME_VERIFIER_MEASURED_BOOT_EVALUATE"] = evaluate
        state.set_tpm_clockinfo(TPMClockInfo.from_dict(previous))
        failure = tpm.check_quote(
            state,
            nonce,
            None,  # no PCR 16 data binding (push model)
            quote,
            ak_tpm,
            tpm_policy={},
            hash_alg=Hash.SHA256,
            mb_measurement_list=log_b64,
            mb_policy=refstate_text,
            mb_policy_name="example",
            count=count,
            skip_pcr_check=skip_pcr_check,
        )
        if failure:
            details = [(e.event_id, e.context) for e in failure.events]
            sys.exit(f"keylime refused the {alg} evidence: {details}")

    out = {}
    for mode, args in (
        ("full", (False, 0, "always")),
        ("steady", (False, 1, "once")),
        ("quote", (True, 1, "once")),
    ):
        out[mode] = timed(lambda args=args: check(*args), seconds, 5)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=3.0, help="time per case (default 3)")
    p.add_argument("--alg", default="ecc,rsa", help="comma-separated: ecc, rsa")
    p.add_argument("--write-refstate", action="store_true", help="regenerate keylime-refstate.json")
    a = p.parse_args()
    if a.write_refstate:
        write_refstate()
        return
    keylime = import_keylime()
    with open(REFSTATE, encoding="utf-8") as f:
        refstate_text = json.dumps(json.load(f))
    for alg in a.alg.split(","):
        for mode, r in bench(alg, a.seconds, refstate_text, keylime).items():
            r.update(
                {
                    "alg": alg,
                    "mode": mode,
                    "keylime": version("keylime"),
                    "cryptography": version("cryptography"),
                    "python": sys.version.split()[0],
                }
            )
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
