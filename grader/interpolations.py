"""The five interpolations (grader/figures.py, figure 3), and for each pair
not found, what the student's calls hold instead.

Each pair (a, b) is 25 frames sigmoid(decoder((1 - s) z_a + s z_b)),
s = linspace(0, 1, 25), z the encoder means of test images a and b, in either
direction, in one call or as 25-frame chunks of a longer one. For a missing
pair the calls are read as the student's attempts: runs of one-image calls
(a frame per call) are joined, and calls that each repeat the previous one
with a frame more (saved inside the loop) are read as their last. A diagnosis
is given only where its own signature is measured (logits whose sigmoid is
the interpolation; posterior samples at the ends; fresh posterior noise in
each frame); otherwise the message says what was found: how many frames,
which decoded means are at the ends, which frames are on the line between the
encoder means and at which s.

model is a grader.figures.Model: decoded encoder means, posterior spreads and
the decoder of the trained networks.
"""
import numpy as np

from grader.pixels import (SAME, in_unit_interval, logit_distance, logits, same,
                           shown_as_logits, sigmoid, smooth_path)
from grader.prior import fit
from vae import INTERPOLATION_PAIRS, INTERPOLATION_STEPS

# End frames of an interpolation between posterior samples: the mean of the
# two ends' logit distances over the spread, for the nearest pair, was at most
# 3.4 in 800 draws (99%: 2.3).
POSTERIOR_ENDS = 4.0
# ... and its frames are decodings of the line between the two samples: with
# z fitted to the end frames (grader/prior.py fit, from the encoder means),
# the largest logit distance of a frame from the decoding of the line at its
# s, over the spread of the pair, was at most 0.79 in 600 draws (99%: 0.46,
# median 0.07); frames decoded from fresh posterior samples were at least 1.65
# from it, the 25 frames of s z_a + (1 - i) z_b (i the frame's index) 2.5.
POSTERIOR_LINE = 1.0
# Frames decoded from fresh posterior noise around the line between the
# encoder means: each frame's logit distance from the line's decoding at its
# s, over the spread interpolated between the pair's, averages 1.0 (600 draws
# with the log-std interpolated too: 0.64 to 1.55; the same with one std:
# 0.62 to 1.51) and the frames are not a smooth path (98% of draws). After
# the skeleton's training the posteriors overlap the prior, so 25 prior
# samples are as near to some pair's line in 4 draws of 10; so the ratio must
# also be at most FRESH_PRIOR times that of the model's prior samples
# (FRESH_BANK decodings of z ~ N(0, I), a stream of its own), which was at
# most 0.81 for fresh noise (500 draws, median 0.33) and at least 0.75 for 25
# prior samples against the nearest of the five pairs (100 draws, 1%: 0.78).
# The figure read as the prior samples is not taken for an interpolation.
FRESH_RATIO = 1.6
FRESH_PRIOR = 0.7
FRESH_BANK, FRESH_SEED = 500, 2
SAMPLES = "it looks like posterior samples were interpolated"
FRESH = "each frame is decoded from a fresh posterior sample"
LINE_GRID = 1201         # values of s on [0, 1] searched for a frame's place on a line
REFINE_STEPS = 60        # golden-section steps from the nearest of them


def pair_list(pairs):
    return ", ".join(str(pair) for pair in pairs)


# ---- The student's calls, read as sequences of frames ---------------------------

def segments(figures):
    """[(filename, frames)]: 25-frame chunks of calls whose length is a
    multiple of 25, other calls whole."""
    out = []
    for filename, images in figures:
        n = INTERPOLATION_STEPS if len(images) % INTERPOLATION_STEPS == 0 else len(images)
        out += [(filename, images[i:i + n]) for i in range(0, len(images), n)]
    return out


def grows(previous, images):
    return (len(images) > len(previous) and images.shape[1:] == previous.shape[1:]
            and same(images[:len(previous)], previous))


def sequences(figures, skip=()):
    """[(index, filename, frames, saved)]: the calls not in skip (indices) as
    attempts at an interpolation. saved says how, for joined calls: a run of
    one-image calls is one sequence ("saved by N calls of one image each"; 25 at a
    time when they are a multiple of 25),
    calls each repeating the previous with frames added are their last
    ("saved N times, each call one frame more"); other calls as segments."""
    out, k = [], 0
    while k < len(figures):
        filename, images = figures[k]
        end = k + 1
        if k in skip:
            k = end
            continue
        if len(images) == 1:
            while end < len(figures) and end not in skip and len(figures[end][1]) == 1:
                end += 1
            if end - k > 1:     # a multiple of 25 frames: 25 at a time, as segments() cuts
                n = INTERPOLATION_STEPS if (end - k) % INTERPOLATION_STEPS == 0 else end - k
                for start in range(k, end, n):
                    frames = np.concatenate([figures[j][1] for j in range(start, start + n)])
                    out.append((start, figures[start][0], frames,
                                f"saved by {n} calls of one image each"))
                k = end
                continue
        while end < len(figures) and end not in skip and grows(figures[end - 1][1],
                                                                figures[end][1]):
            end += 1
        if end - k > 1:
            out.append((end - 1, figures[end - 1][0], figures[end - 1][1],
                        f"saved {end - k} times, each call repeating the frames before"))
        else:
            out += [(k, f, x, "") for f, x in segments([(filename, images)])]
        k = end
    return out


# ---- Where frames are, on the trained model's lines -------------------------------

def places_on_line(frames, a, b, model):
    """(s (n,), off (n,)): for each frame the s in [0, 1] whose decoding
    sigmoid(decoder((1 - s) z_a + s z_b)) is nearest in logits, and that
    distance over the spread interpolated between the pair's."""
    def distance(s):   # s (n,) -> (n,)
        line = model.decode((1 - s)[:, None] * model.mean[a] + s[:, None] * model.mean[b])
        return logit_distance(frames, line)

    grid = np.linspace(0, 1, LINE_GRID)
    line = logits(model.decode((1 - grid)[:, None] * model.mean[a] + grid[:, None] * model.mean[b]))
    target = logits(frames)
    nearest = np.argmin([np.mean(np.abs(target - image), axis=-1) for image in line], axis=0)
    low = grid[np.maximum(nearest - 1, 0)]
    high = grid[np.minimum(nearest + 1, LINE_GRID - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(REFINE_STEPS):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        closer = distance(left) < distance(right)
        low, high = np.where(closer, low, left), np.where(closer, right, high)
    s = (low + high) / 2
    spread = (1 - s) * model.spread[a] + s * model.spread[b]
    return s, distance(s) / spread


def on_line(frames, s, a, b, model):
    """(n,) True where a frame is the decoding of the line at s, to SAME."""
    line = model.decode((1 - s)[:, None] * model.mean[a] + s[:, None] * model.mean[b])
    return np.max(np.abs(frames - line), axis=-1) <= SAME


def steps_of(s):
    """Words for the values of s: "s = linspace(0, 1, n)", evenly spaced, or listed."""
    s = np.round(s, 9) + 0.0
    n = len(s)
    for steps in (np.linspace(0, 1, n), np.linspace(1, 0, n)):
        if np.allclose(s, steps, rtol=0, atol=1e-6):
            return f"s = linspace(0, 1, {n})"
    if n > 2 and np.allclose(np.diff(s), s[1] - s[0], rtol=0, atol=1e-6):
        return f"s from {s[0]:.3g} to {s[-1]:.3g} in steps of {s[1] - s[0]:.3g}"
    shown = ", ".join(f"{v:.3g}" for v in s[:5])
    return f"s = {shown}" + ", ..." * (n > 5)


def frame_ranges(indices):
    """[0, 1, 2, 5] -> "frames 0 to 2, 5 are"; [4] -> "frame 4 is"."""
    runs = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    words = ", ".join(f"{first}" if first == last else f"{first} to {last}"
                      for first, last in runs)
    return f"frames {words} are" if len(indices) > 1 else f"frame {words} is"


def line_report(frames, a, b, model, skip=()):
    """(words, distances): which frames are on the line between the encoder
    means of a and b (from a at s = 0), at which s, and how far the others
    are from it; the frames in skip are not described (an end already said)."""
    s, off = places_on_line(frames, a, b, model)
    on = on_line(frames, s, a, b, model)
    between = "the line between the two encoder means"
    if on.all():
        return f"all {len(frames)} on {between}, at {steps_of(s)}", []
    shown = np.array([k not in skip for k in range(len(frames))])
    words = []
    if (on & shown).any():
        words.append(f"{frame_ranges(np.flatnonzero(on & shown))} on {between}, at "
                     f"{steps_of(s[on & shown])}")
    outside = np.flatnonzero(~on)
    words.append(f"{frame_ranges(outside)} not on the straight line between the two encoder "
                 f"means ({{}} times the posterior spread from the nearest decoding of it)")
    return "; ".join(words), list(off[outside])


def ends_report(frames, pair, model):
    """(the images whose decoded means the end frames are, or None each;
    words for the ends, in the pair's terms)."""
    at, words = [], []
    for name, frame in (("first", frames[0]), ("last", frames[-1])):
        exact = [i for i, d in enumerate(model.decoded_means) if same(frame, d)]
        at.append(exact[0] if exact else None)
        if exact:
            which = ("of the pair's first image" if exact[0] == pair[0] else
                     "of the pair's second image" if exact[0] == pair[1] else
                     f"of test image {exact[0]}")
            words.append(f"the {name} frame is the decoded mean {which}")
        else:
            ratios = model.ratios(np.repeat(frame[None], len(model.decoded_means), 0),
                                  range(len(model.decoded_means)))
            words.append(f"the {name} frame is " + ("near, not at, a decoded mean"
                         if ratios.min() <= POSTERIOR_ENDS else "not near any decoded mean"))
    return at, ", ".join(words)


# ---- Diagnoses, each checked on its own signature ----------------------------------

def matches(frames, a, b, model):
    expected = model.interpolation(a, b)
    return same(frames, expected) or same(frames, expected[::-1])


def posterior_line(frames, pair, model):
    """True if 25 frames in [0, 1], a smooth path, end near, not at, the
    decoded means of the pair and are decodings of the line between two
    latent points near the encoder means: posterior samples interpolated."""
    if (len(frames) != INTERPOLATION_STEPS or not in_unit_interval(frames)
            or not smooth_path(frames)):
        return False
    d = model.decoded_means
    for a, b in (pair, pair[::-1]):
        ends = frames[[0, -1]]
        if (same(ends[0], d[a]) or same(ends[1], d[b])
                or model.ratios(ends, (a, b)).mean() > POSTERIOR_ENDS):
            continue
        z = fit(model.gen_params, logits(ends), model.mean[[a, b]])[0]
        s = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
        line = model.decode((1 - s) * z[0] + s * z[1])
        spread = model.spread[[a, b]].mean()
        if np.max(logit_distance(frames, line)) / spread <= POSTERIOR_LINE:
            return True
    return False


def fresh_noise(frames, pair, model):
    """The mean ratio of the frames to the decoded line of the pair, frame by
    frame, if 25 frames in [0, 1] that are not a smooth path stay within
    FRESH_RATIO of it, else None."""
    if (len(frames) != INTERPOLATION_STEPS or not in_unit_interval(frames)
            or smooth_path(frames)):
        return None
    s = np.linspace(0, 1, INTERPOLATION_STEPS)
    expected = model.interpolation(*pair)
    spread = (1 - s) * model.spread[pair[0]] + s * model.spread[pair[1]]
    ratio = min((logit_distance(frames, expected) / spread).mean(),
                (logit_distance(frames[::-1], expected) / spread).mean())
    if ratio > FRESH_RATIO:
        return None
    z = np.random.RandomState(FRESH_SEED).randn(FRESH_BANK, model.mean.shape[1])
    prior = model.decode(z).reshape(-1, INTERPOLATION_STEPS, frames.shape[1])   # (20, 25, D)
    baseline = (logit_distance(prior, expected) / spread).mean()
    return ratio if ratio <= FRESH_PRIOR * baseline else None


def diagnosis(filename, frames, saved, pair, model, may_be_prior):
    """What the frames of one sequence are, read as an attempt at pair:
    (words, numbers), the words with {} where the range of the numbers over
    the pairs they are said of goes; or None."""
    how = f" ({filename}, {saved})" if saved else ""
    if shown_as_logits(frames):
        if matches(sigmoid(frames), *pair, model):
            return (f"values outside [0, 1]{how}: these are logits: apply the sigmoid (the "
                    "Bernoulli means)"), []
        return None
    if not in_unit_interval(frames) or len(frames) < 2:
        return None
    a, b = pair
    if matches(frames, a, b, model):
        return (f"the 25 frames are right but {saved} ({filename}): save each interpolation "
                "in one call"), []
    at, ends = ends_report(frames, pair, model)
    n = len(frames)
    if set(at) == {a, b}:
        where, off = line_report(frames, *(pair if at[0] == a else pair[::-1]), model, (0, n - 1))
        if n != INTERPOLATION_STEPS:
            return f"{n} frames instead of {INTERPOLATION_STEPS}{how}: {where}", off
        return (f"the end frames are the decoded means, but the frames between them are not "
                f"sigmoid(decoder((1 - s) z_a + s z_b)) for s = linspace(0, 1, 25){how}: "
                f"{where}"), off
    if a in at or b in at:
        first, second = (a, b) if at[0] == a or at[1] == b else (b, a)
        ends_at = [k for k, i in ((0, at[0]), (n - 1, at[1])) if i is not None]
        where, off = line_report(frames, first, second, model, ends_at)
        return f"{n} frames{how}; {ends}; {where}", off
    if posterior_line(frames, pair, model):
        return (f"the end frames are not the decoded encoder means: {SAMPLES} (use the "
                "recognition model's means)"), []
    ratio = None if may_be_prior else fresh_noise(frames, pair, model)
    if ratio is not None:
        return (f"the frames are on average {{}} times the posterior spread from the "
                f"decoded line between the encoder means, as posterior samples are, but "
                f"consecutive frames differ as much as separate samples: {FRESH}: decode the "
                f"interpolated means themselves"), [ratio]
    return None


def judge(figures, model, seen=None):
    """(status, message) of the five interpolations. figures: [(filename,
    (n, D) images)] of the recorded calls; seen (a dict), if given, gets
    {pair: frames} of each pair's interpolation found or attempt diagnosed."""
    seen = {} if seen is None else seen
    expected = {pair: model.interpolation(*pair) for pair in INTERPOLATION_PAIRS}
    found, matched = {}, set()
    for k, (filename, images) in enumerate(figures):
        for _, segment in segments([(filename, images)]):
            for pair, frames in expected.items():
                if same(segment, frames) or same(segment, frames[::-1]):
                    found.setdefault(pair, filename)
                    seen.setdefault(pair, segment)
                    matched.add(k)
    missing = [pair for pair in INTERPOLATION_PAIRS if pair not in found]
    if not missing:
        return "pass", "all five found: " + ", ".join(
            f"{pair} in {found[pair]}" for pair in INTERPOLATION_PAIRS)
    # the call judged as the prior samples (figures.judge_prior_samples)
    prior = next((k for k, (_, x) in enumerate(figures)
                  if len(x) == INTERPOLATION_STEPS and not smooth_path(x)), None)
    attempts = sequences(figures, skip=matched)
    why, used = {}, set()    # a diagnosis -> [(pair, filename)] it explains
    for pair in missing:
        for k, (index, filename, frames, saved) in enumerate(attempts):
            if k in used:
                continue
            said = diagnosis(filename, frames, saved, pair, model,
                             may_be_prior=index == prior and not saved)
            if said is not None:
                why.setdefault(said[0], []).append((pair, filename, said[1]))
                seen[pair] = frames
                used.add(k)
                break
    found = [pair for pair in INTERPOLATION_PAIRS if pair in found]
    message = (f"found interpolations for {pair_list(found)}{' only' * (len(found) == 1)}"
               if found else "found no interpolation")
    message += f"; missing {pair_list(missing)}"
    for text, where in why.items():
        files = sorted({filename for _, filename, _ in where})
        named = " in " + ", ".join(files) if SAMPLES in text or FRESH in text else ""
        values = [v for _, _, numbers in where for v in numbers]
        if values:
            low, high = f"{min(values):.2g}", f"{max(values):.2g}"
            text = text.format(low if low == high else f"{low} to {high}")
        message += f"; {pair_list(pair for pair, _, _ in where)}{named}: {text}"
    return "fail", message
