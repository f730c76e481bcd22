# BENCHMARKS.md section 6, the CPU check re-run after the drift change (Brackets.remember), the
# 2-core dev machine, tuner at the merge of that change: the commands of
# ../2026-12-05-cpu-bursty/commands.sh, one after the other -> quiet.log, busy.log
# Then, minutes later, one bursty.py kept running beside two runs of its busy command one after
# the other: the code before the drift change (82742ce, PYTHONPATH to a worktree of it) ->
# busy-before.log (44 s), and after it -> busy-after.log (41 s)
