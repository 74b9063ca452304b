# shellcheck shell=bash
# Runs inside the guest before any module is loaded (qemu.sh -P, ahead of the -M modules):
# flowlens with the defaults (`flowlens once`, then a short `flowlens telegraf` run with two
# gathers) must make the kernel load no module (issue 22: an observer changes nothing in the
# node's kernel). The kernel's module requests are recorded instead of served (the modprobe it
# runs is a recorder here), and /proc/modules is compared before and after.
# Output: its own lines, ending with "== module check: ok" or "== module check: FAILED (...)";
# the same verdict in /run/qk_module_check, which guest.sh reports (and fails on).
set -u
verdict=/run/qk_module_check
requests=/run/qk_module_requests
: >"$requests"
echo "== module check: flowlens with the defaults before any module is loaded"
before=$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')
echo "modules before: ${before:-none}"
modprobe_was=$(cat /proc/sys/kernel/modprobe)
cat >/run/qk_modprobe <<REC
#!/usr/bin/bash
echo "\$*" >>$requests
exit 1
REC
chmod +x /run/qk_modprobe
echo /run/qk_modprobe >/proc/sys/kernel/modprobe
/qk/target/debug/flowlens once >/run/qk_once.out 2>/run/qk_once.err
once_rc=$?
echo "flowlens once: exit $once_rc, $(wc -l </run/qk_once.out) lines"
sed 's/^/  /' /run/qk_once.err
# Two gathers (two newlines), then stdin closes: a normal end.
{ echo; sleep 2; echo; sleep 2; } | /qk/target/debug/flowlens telegraf \
	>/run/qk_telegraf.out 2>/run/qk_telegraf.err
telegraf_rc=$?
echo "flowlens telegraf: exit $telegraf_rc, $(wc -l </run/qk_telegraf.out) lines"
grep -E 'DNAT|start-up scan|capabilities' /run/qk_telegraf.err | sed 's/^/  /'
echo "$modprobe_was" >/proc/sys/kernel/modprobe
after=$(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')
echo "modules after: ${after:-none}"
problems=()
[[ $before == "$after" ]] || problems+=("/proc/modules changed: ${before:-none} -> ${after:-none}")
if [[ -s $requests ]]; then
	problems+=("module requests: $(tr '\n' ' ' <"$requests")")
fi
((once_rc == 0)) || problems+=("flowlens once exited $once_rc")
((telegraf_rc == 0)) || problems+=("flowlens telegraf exited $telegraf_rc")
if ((${#problems[@]})); then
	line="FAILED ($(printf '%s; ' "${problems[@]}" | sed 's/; $//'))"
else
	line=ok
fi
echo "$line" >"$verdict"
echo "== module check: $line"
