# Re-run after the drift change (Brackets.remember), tuner at the merge of answerci; same commands
# The 2-core dev machine (CPU only), one after the other, from an empty folder each:
tuner run --pipe tiny-sd --device cpu --steps 4 --num-samples 2 --batch-size 1 --combo deepcache \
    --sampler grid --trials 50 --no-progress > quiet.log 2>&1
python benchmarks/bursty.py &    # one busy-looping process per core, busy 0.2-0.6 s, idle as long
tuner run --pipe tiny-sd --device cpu --steps 4 --num-samples 2 --batch-size 1 --combo deepcache \
    --sampler grid --trials 50 --no-progress > busy.log 2>&1
kill %1
# Then, minutes later, one bursty.py kept running beside two runs one after the other: the code
# before the drift change (82742ce, PYTHONPATH to a worktree of it) -> busy-before.log (44 s), and
# after it -> busy-after.log (41 s)
