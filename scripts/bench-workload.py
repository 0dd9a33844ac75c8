#!/usr/bin/env python3
"""Workload and bookkeeping for scripts/bench-apply (bosund apply vs Ansible).

One list of steps (`steps()`) is rendered into both a bosun TOML playbook and an
Ansible YAML playbook, so the two cannot drift apart.  Standard library only.

Two workloads:
  flat50    50 steps written one by one (20 directories, 20 files, 5 commands, 5 lines).
  loops200  200 steps written the way a real playbook is: a main playbook that includes
            four files of looped steps (50 directories, 50 files, 50 templates, 25 lines,
            25 `creates` commands, each a loop over a list variable). bosun: `include` +
            `loop`; Ansible: `import_tasks` + `loop` (the static import, its faster form).

Subcommands:
  generate --out DIR --bosun-root R1 --ansible-root R2 --python PY [--workload W]
      Seed R1 and R2 with identical starting trees, write DIR/bosun.toml,
      DIR/site.yml and DIR/inventory.ini (and the included files).
  compare R1 R2
      Fail unless both trees hold the same paths, types, modes and contents.
  snapshot ROOT FILE
      Write a snapshot (incl. mtimes) of ROOT to FILE; with --against OLD, fail
      if anything (content, mode or mtime) differs from OLD.
  report --out JSON ...
      Compute median/min from hyperfine (or fallback) JSON, print the table.
"""

import argparse
import hashlib
import json
import os
import statistics
import sys

N_DIRS, N_FILES, N_CMDS, N_LINES = 20, 20, 5, 5


def steps():
    """The workload: 50 steps, paths relative to the playbook variable `root`."""
    out = []
    for i in range(1, N_DIRS + 1):
        out.append(("dir", f"dir {i:02}", {"path": f"d{i:02}", "mode": "0755"}))
    for i in range(1, N_FILES + 1):
        content = (
            f"# bench file {i:02} (managed)\n"
            f"name=svc{i:02}\n"
            f"workers={i}\n"
            f"listen=127.0.0.1:{8000 + i}\n"
        )
        out.append(("copy", f"file {i:02}", {"dest": f"d{i:02}/app.conf", "content": content, "mode": "0644"}))
    for i in range(1, N_CMDS + 1):
        marker = f"d{i:02}/ran-{i}.marker"
        out.append(("command", f"cmd {i}", {"run": "touch {root}/" + marker, "creates": marker}))
    for i in range(1, N_LINES + 1):
        # conf 1..3 hold a `port=` line to replace; conf 4..5 have none, the line is appended.
        out.append(("line", f"line {i}", {"path": f"etc/svc{i}.conf", "regexp": "^port=", "line": f"port={9000 + i}"}))
    assert len(out) == 50
    return out


def seed_files():
    """Files present before either tool runs (targets of the line_in_file steps)."""
    files = {}
    for i in range(1, N_LINES + 1):
        lines = [f"# service {i}", f"name=svc{i}"]
        if i <= 3:
            lines.append("port=80")
        lines.append("debug=false")
        files[f"etc/svc{i}.conf"] = "\n".join(lines) + "\n"
    return files


def q(s):
    # A JSON string of ASCII text is a valid TOML basic string and a valid YAML
    # double-quoted scalar; keep the workload ASCII so this holds.
    assert s.isascii(), s
    return json.dumps(s)


def tpl(rel):
    return "{{ root }}/" + rel


def render_bosun(root):
    lines = ['name = "bench"', "", "[vars]", f"root = {q(root)}", ""]
    for kind, name, a in steps():
        lines.append("[[step]]")
        lines.append(f"name = {q(name)}")
        if kind == "dir":
            body = f"file = {{ path = {q(tpl(a['path']))}, state = \"directory\", mode = {q(a['mode'])} }}"
        elif kind == "copy":
            body = f"copy = {{ dest = {q(tpl(a['dest']))}, content = {q(a['content'])}, mode = {q(a['mode'])} }}"
        elif kind == "command":
            body = f"command = {{ run = {q(a['run'].replace('{root}', '{{ root }}'))}, creates = {q(tpl(a['creates']))} }}"
        elif kind == "line":
            body = (
                f"line_in_file = {{ path = {q(tpl(a['path']))}, regexp = {q(a['regexp'])}, line = {q(a['line'])} }}"
            )
        else:
            raise AssertionError(kind)
        lines.append(body)
        lines.append("")
    return "\n".join(lines)


def render_ansible(root):
    out = [
        "- name: bench",
        "  hosts: localhost",
        "  connection: local",
        "  gather_facts: false",
        "  vars:",
        f"    root: {q(root)}",
        "  tasks:",
    ]
    for kind, name, a in steps():
        out.append(f"    - name: {q(name)}")
        if kind == "dir":
            out += [
                "      ansible.builtin.file:",
                f"        path: {q(tpl(a['path']))}",
                "        state: directory",
                f"        mode: {q(a['mode'])}",
            ]
        elif kind == "copy":
            out += [
                "      ansible.builtin.copy:",
                f"        dest: {q(tpl(a['dest']))}",
                f"        content: {q(a['content'])}",
                f"        mode: {q(a['mode'])}",
            ]
        elif kind == "command":
            out += [
                "      ansible.builtin.command:",
                f"        cmd: {q(a['run'].replace('{root}', '{{ root }}'))}",
                f"        creates: {q(tpl(a['creates']))}",
            ]
        elif kind == "line":
            out += [
                "      ansible.builtin.lineinfile:",
                f"        path: {q(tpl(a['path']))}",
                f"        regexp: {q(a['regexp'])}",
                f"        line: {q(a['line'])}",
            ]
        else:
            raise AssertionError(kind)
    return "\n".join(out) + "\n"


N_SERVICES = 50
LOOP_STEPS = {"directory": 50, "copy": 50, "template": 50, "line_in_file": 25, "command": 25}


def services():
    return [f"svc{i:03}" for i in range(1, N_SERVICES + 1)]


UNIT_TEMPLATE = "[Service]\nName={{ item }}\nWorkingDirectory=/srv/{{ item }}\nEnvironment=SERVICE={{ item | upper }}\n"


def loops_files(root, tool):
    """The loops200 playbooks of `tool` ("bosun" or "ansible"): {relative path: text}."""
    svc = services()
    svc_list = "[" + ", ".join(q(s) for s in svc) + "]"

    def half(n):  # the first or second 25 services, as a list literal
        return "[" + ", ".join(q(s) for s in svc[n * 25:(n + 1) * 25]) + "]"

    if tool == "bosun":
        # Parts: (file, step name, action TOML, loop expression)
        parts = [
            ("dirs", "service directory",
             'file = { path = "{{ root }}/srv/{{ item }}", state = "directory", mode = "0755" }',
             "{{ services }}"),
            ("configs", "service config",
             'copy = { dest = "{{ root }}/srv/{{ item }}/app.conf", content = "name={{ item }}\\nmanaged=true\\n", mode = "0644" }',
             "{{ services }}"),
            ("units", "service unit",
             'template = { src = "templates/unit.j2", dest = "{{ root }}/srv/{{ item }}/unit.conf", mode = "0644" }',
             "{{ services }}"),
            ("tuning", "tuning line",
             'line_in_file = { path = "{{ root }}/etc/tuning.conf", regexp = "^{{ item }}=", line = "{{ item }}=on" }',
             "{{ tuned }}"),
            ("init", "initialise once",
             'command = { run = "touch {{ root }}/srv/{{ item }}/.initialised", creates = "{{ root }}/srv/{{ item }}/.initialised" }',
             "{{ fresh }}"),
        ]
        main = ['name = "bench-loops"', "", "[vars]", f"root = {q(root)}", f"services = {svc_list}",
                f"tuned = {half(0)}", f"fresh = {half(1)}", ""]
        files = {}
        for fname, step, action, loop in parts:
            main += ["[[step]]", f"name = {q(fname)}", f'include = {{ playbook = "roles/{fname}.toml" }}', ""]
            files[f"roles/{fname}.toml"] = "\n".join(
                [f"name = {q(fname)}", "", "[[step]]", f"name = {q(step)}", action, f"loop = {q(loop)}", ""]
            )
        files["bosun.toml"] = "\n".join(main)
        files["roles/templates/unit.j2"] = UNIT_TEMPLATE
        return files
    parts = [
        ("dirs", "service directory",
         ["ansible.builtin.file:", '  path: "{{ root }}/srv/{{ item }}"', "  state: directory", '  mode: "0755"'],
         "{{ services }}"),
        ("configs", "service config",
         ["ansible.builtin.copy:", '  dest: "{{ root }}/srv/{{ item }}/app.conf"',
          '  content: "name={{ item }}\\nmanaged=true\\n"', '  mode: "0644"'],
         "{{ services }}"),
        ("units", "service unit",
         ["ansible.builtin.template:", '  src: "{{ playbook_dir }}/roles/templates/unit.j2"',
          '  dest: "{{ root }}/srv/{{ item }}/unit.conf"', '  mode: "0644"'],
         "{{ services }}"),
        ("tuning", "tuning line",
         ["ansible.builtin.lineinfile:", '  path: "{{ root }}/etc/tuning.conf"', '  regexp: "^{{ item }}="',
          '  line: "{{ item }}=on"'],
         "{{ tuned }}"),
        ("init", "initialise once",
         ["ansible.builtin.command:", '  cmd: "touch {{ root }}/srv/{{ item }}/.initialised"',
          '  creates: "{{ root }}/srv/{{ item }}/.initialised"'],
         "{{ fresh }}"),
    ]
    main = [
        "- name: bench-loops",
        "  hosts: localhost",
        "  connection: local",
        "  gather_facts: false",
        "  vars:",
        f"    root: {q(root)}",
        f"    services: {svc_list}",
        f"    tuned: {half(0)}",
        f"    fresh: {half(1)}",
        "  tasks:",
    ]
    files = {}
    for fname, step, action, loop in parts:
        main += [f"    - name: {q(fname)}", f"      ansible.builtin.import_tasks: roles/{fname}.yml"]
        body = [f"- name: {q(step)}"] + ["  " + l for l in action] + [f"  loop: {q(loop)}"]
        files[f"roles/{fname}.yml"] = "\n".join(body) + "\n"
    files["site.yml"] = "\n".join(main) + "\n"
    files["roles/templates/unit.j2"] = UNIT_TEMPLATE
    return files


def seed(root, workload="flat50"):
    os.makedirs(root, exist_ok=True)
    if workload == "loops200":
        os.makedirs(os.path.join(root, "etc"), exist_ok=True)
        p = os.path.join(root, "etc/tuning.conf")
        with open(p, "w") as f:
            f.write("# tuning\nsvc001=off\n")
        os.chmod(p, 0o644)
        return
    for rel, content in seed_files().items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(content)
        os.chmod(p, 0o644)


def cmd_generate(a):
    os.makedirs(a.out, exist_ok=True)
    for r in (a.bosun_root, a.ansible_root):
        if os.path.exists(r) and os.listdir(r):
            sys.exit(f"bench-workload: {r} is not empty")
        seed(r, a.workload)
    if a.workload == "loops200":
        # bosun's playbook and includes in DIR, Ansible's (site.yml, roles/*.yml) in DIR/ansible.
        for tool, root, tdir in (("bosun", a.bosun_root, a.out), ("ansible", a.ansible_root, os.path.join(a.out, "ansible"))):
            for rel, text in loops_files(root, tool).items():
                p = os.path.join(tdir, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "w") as f:
                    f.write(text)
        with open(os.path.join(a.out, "inventory.ini"), "w") as f:
            f.write(f"localhost ansible_connection=local ansible_python_interpreter={a.python}\n")
        print(json.dumps({"steps": sum(LOOP_STEPS.values()), "counts": LOOP_STEPS}))
        return
    with open(os.path.join(a.out, "bosun.toml"), "w") as f:
        f.write(render_bosun(a.bosun_root))
    with open(os.path.join(a.out, "site.yml"), "w") as f:
        f.write(render_ansible(a.ansible_root))
    with open(os.path.join(a.out, "inventory.ini"), "w") as f:
        f.write(f"localhost ansible_connection=local ansible_python_interpreter={a.python}\n")
    counts = {}
    for kind, _, _ in steps():
        counts[kind] = counts.get(kind, 0) + 1
    print(json.dumps({"steps": len(steps()), "counts": counts}))


def tree(root, with_mtime=False):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            entry = {"mode": oct(st.st_mode & 0o7777)}
            if os.path.islink(p):
                entry["type"] = "link"
                entry["target"] = os.readlink(p)
            elif os.path.isdir(p):
                entry["type"] = "dir"
            else:
                entry["type"] = "file"
                with open(p, "rb") as f:
                    data = f.read()
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                entry["size"] = len(data)
            if with_mtime:
                entry["mtime_ns"] = st.st_mtime_ns
            snap[rel] = entry
    return snap


def diff(a, b):
    msgs = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            msgs.append(f"  only in second: {k}")
        elif k not in b:
            msgs.append(f"  only in first:  {k}")
        elif a[k] != b[k]:
            msgs.append(f"  differs: {k}: {a[k]} != {b[k]}")
    return msgs


def cmd_compare(a):
    t1, t2 = tree(a.first), tree(a.second)
    msgs = diff(t1, t2)
    if msgs:
        print(f"bench-workload: trees differ ({a.first} vs {a.second}):", file=sys.stderr)
        print("\n".join(msgs), file=sys.stderr)
        for rel in sorted(set(t1) & set(t2)):
            if t1[rel].get("sha256") != t2[rel].get("sha256"):
                for r in (a.first, a.second):
                    with open(os.path.join(r, rel), "rb") as f:
                        print(f"--- {r}/{rel}\n{f.read()!r}", file=sys.stderr)
        sys.exit(1)
    files = sum(1 for e in t1.values() if e["type"] == "file")
    dirs = sum(1 for e in t1.values() if e["type"] == "dir")
    print(f"trees equivalent: {dirs} dirs, {files} files (paths, types, modes, contents)")


def cmd_snapshot(a):
    snap = tree(a.root, with_mtime=True)
    if a.against:
        with open(a.against) as f:
            old = json.load(f)
        msgs = diff(old, snap)
        if msgs:
            print(f"bench-workload: {a.root} changed during idempotent runs:", file=sys.stderr)
            print("\n".join(msgs), file=sys.stderr)
            sys.exit(1)
        print(f"{a.root}: untouched by the timed runs ({len(snap)} entries, mtimes included)")
    with open(a.file, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=True)


def load_times(path):
    """Seconds per run, from a hyperfine --export-json file or a plain JSON list."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        return [float(t) for t in data["results"][0]["times"]]
    return [float(t) for t in data]


def load_cpu(path):
    """Mean user+sys seconds per run from a hyperfine export; None for the fallback loop."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        r = data["results"][0]
        return float(r["user"]) + float(r["system"])
    return None


def fmt_time(s):
    if s >= 1.0:
        return f"{s:.2f} s"
    return f"{s * 1000:.1f} ms"


def cmd_report(a):
    if a.workload == "loops200":
        counts = LOOP_STEPS
        described = (
            "200 steps as loops in 5 included files (50 directory, 50 copy, 50 template, "
            "25 line_in_file, 25 command)"
        )
    else:
        counts = {"file_directory": N_DIRS, "copy": N_FILES, "command": N_CMDS, "line_in_file": N_LINES}
        described = f"50 steps ({N_DIRS} dir, {N_FILES} copy, {N_CMDS} command, {N_LINES} line_in_file)"
    result = {
        "workload": {
            "name": a.workload,
            "steps": sum(counts.values()),
            "counts": counts,
            "run": "idempotent second run",
        },
        "timer": a.timer,
        "host": {"nproc": os.cpu_count(), "uname": " ".join(os.uname())},
        "tools": {},
    }
    rows = []
    result["loadavg_start"] = a.load_start
    result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for tool, times_path, rss_path, version in (
        ("bosund", a.bosund_times, a.bosund_rss, a.bosund_version),
        ("ansible", a.ansible_times, a.ansible_rss, a.ansible_version),
    ):
        if not times_path:
            continue
        times = load_times(times_path)
        cpu = load_cpu(times_path)
        # /usr/bin/time -f '%M %e %U %S' of one idempotent run (KiB, s, s, s)
        with open(rss_path) as f:
            rss_kib, rss_wall, rss_user, rss_sys = f.read().split()[-4:]
        if cpu is None:
            cpu = float(rss_user) + float(rss_sys)
        entry = {
            "version": version,
            "runs": len(times),
            "times_s": times,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "mean_s": statistics.fmean(times),
            "cpu_s": cpu,
            "peak_rss_kib": int(rss_kib),
            "rss_run": {"wall_s": float(rss_wall), "user_s": float(rss_user), "sys_s": float(rss_sys)},
        }
        result["tools"][tool] = entry
        rows.append((tool, entry))
    if "bosund" in result["tools"] and "ansible" in result["tools"]:
        b, an = result["tools"]["bosund"], result["tools"]["ansible"]
        result["ratio_median"] = an["median_s"] / b["median_s"]
        result["ratio_min"] = an["min_s"] / b["min_s"]
        result["ratio_cpu"] = an["cpu_s"] / b["cpu_s"] if b["cpu_s"] else None
        result["ratio_peak_rss"] = an["peak_rss_kib"] / b["peak_rss_kib"]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print()
    print(f"workload: {described}, idempotent second run")
    print(f"{'tool':<9} {'runs':>4} {'median':>10} {'min':>10} {'cpu/run':>10} {'peak RSS':>10}")
    for tool, e in rows:
        rss = f"{e['peak_rss_kib'] / 1024:.1f} MiB"
        print(
            f"{tool:<9} {e['runs']:>4} {fmt_time(e['median_s']):>10} {fmt_time(e['min_s']):>10} "
            f"{fmt_time(e['cpu_s']):>10} {rss:>10}"
        )
    if "ratio_median" in result:
        print(f"ratio (ansible/bosund, median): {result['ratio_median']:.1f} x")
        if result["ratio_cpu"]:
            print(f"ratio (ansible/bosund, cpu user+sys): {result['ratio_cpu']:.1f} x")
        print(f"ratio (ansible/bosund, peak RSS): {result['ratio_peak_rss']:.1f} x")
    ncpu = os.cpu_count() or 1
    loads = [float(x) for x in (a.load_start or "0").split()[:1]] + [os.getloadavg()[0]]
    if max(loads) > ncpu:
        print(
            f"warning: load average {max(loads):.1f} > {ncpu} CPUs during the run: wall times are "
            "inflated by other work; cpu/run is the steadier figure"
        )
    print(f"raw numbers: {a.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--bosun-root", required=True)
    g.add_argument("--ansible-root", required=True)
    g.add_argument("--python", required=True, help="interpreter for ansible_python_interpreter")
    g.add_argument("--workload", choices=["flat50", "loops200"], default="flat50")
    g.set_defaults(fn=cmd_generate)
    c = sub.add_parser("compare")
    c.add_argument("first")
    c.add_argument("second")
    c.set_defaults(fn=cmd_compare)
    s = sub.add_parser("snapshot")
    s.add_argument("root")
    s.add_argument("file")
    s.add_argument("--against")
    s.set_defaults(fn=cmd_snapshot)
    r = sub.add_parser("report")
    r.add_argument("--out", required=True)
    r.add_argument("--timer", default="hyperfine")
    r.add_argument("--workload", choices=["flat50", "loops200"], default="flat50")
    r.add_argument("--load-start", help="/proc/loadavg figures when the bench started")
    r.add_argument("--bosund-times")
    r.add_argument("--bosund-rss")
    r.add_argument("--bosund-version")
    r.add_argument("--ansible-times")
    r.add_argument("--ansible-rss")
    r.add_argument("--ansible-version")
    r.set_defaults(fn=cmd_report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
