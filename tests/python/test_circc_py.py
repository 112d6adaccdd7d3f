"""test_circc_py.py — python/circc.py on libraries built by circc --emit lib:
hand-computed values of tests/data/lib/lib_a.circ and lib_b.circ, the
tiny_random_gpt2 goldens (Hugging Face's logits and hidden states, rtol 1e-4,
atol 1e-4 as models/gpt2/test_gpt2.sh), taps and a patch against circc eval
(as models/gpt2/test_gpt2_taps.sh), several models and contexts in one
process = each alone in a fresh process, and the mistakes that must raise
circc.Error with a message.
usage: test_circc_py.py CIRCC GPT2_IMPORT REPO_ROOT WORKDIR"""
import os
import shutil
import subprocess
import sys
import threading
import unittest

import numpy as np

CIRCC, GPT2_IMPORT, ROOT, WORK = sys.argv[1:5]
sys.path.insert(0, os.path.join(ROOT, "python"))
import circc  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data", "lib")
GPT2 = os.path.join(ROOT, "models", "gpt2")
GOLD = os.path.join(GPT2, "golden", "tiny_random_gpt2")


def sh(*cmd):
    subprocess.run(cmd, check=True)


def build_all():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    for name in ("lib_a", "lib_b"):
        sh(CIRCC, os.path.join(DATA, name + ".circ"), "--emit", "lib", "-o", os.path.join(WORK, name + ".so"))
    sh(CIRCC, os.path.join(DATA, "lib_b.circ"), "--emit", "lib", "-o", os.path.join(WORK, "2-b\u00e9.x.so"))
    # the tiny GPT-2 in module form at the golden prompt's length (16 tokens)
    sh(GPT2_IMPORT, "--seq", "16", "--name", "gpt2", os.path.join(GPT2, "tiny_random_gpt2"), os.path.join(WORK, "gpt2"))
    sh(CIRCC, "--tensors", os.path.join(WORK, "gpt2", "store"), os.path.join(WORK, "gpt2", "gpt2.circ"),
       "--emit", "lib", "-o", os.path.join(WORK, "gpt2.so"))
    # the logits with every layer's attention pattern tapped and layer 1's heads patchable,
    # and circc eval's values: the pattern, and the logits with those heads patched to zeros
    sh(CIRCC, *TAPPED, "--emit", "lib", "-o", os.path.join(WORK, "tapped.so"))
    ids = os.path.join(WORK, "ids.npy")
    np.save(ids, np.load(os.path.join(GOLD, "seq16_input_ids.npy"))[0])
    np.save(os.path.join(WORK, "zeros.npy"), np.zeros((4, 16, 32), np.float32))
    # (eval keeps the top-level circuits its --output names: the tap names are then the program's)
    sh(CIRCC, "eval", *TAPPED[:3], "--tap", "a.attn_probs", "--input", f"tokens=@{ids}",
       "--output", f"logits=@{os.path.join(WORK, 'eval_logits.npy')}",
       "--output", f"{PROBS}=@{os.path.join(WORK, 'eval_probs.npy')}")
    sh(CIRCC, "eval", *TAPPED[:3], "--patch", f"{HEADS}=@{os.path.join(WORK, 'zeros.npy')}", "--input",
       f"tokens=@{ids}", "--output", f"logits=@{os.path.join(WORK, 'eval_patched.npy')}")


PROBS, HEADS = "b1/a.attn_probs", "b1/a.heads"
TAPPED = ["--tensors", os.path.join(WORK, "gpt2", "store"), os.path.join(WORK, "gpt2", "gpt2.circ"),
          "--output", "logits", "--tap", "a.attn_probs", "--patch", HEADS]


def lib(name):
    return os.path.join(WORK, name + ".so")


X = np.arange(6, dtype=np.float32).reshape(2, 3)
IDS = np.array([2, 0, 1, 1])


class Values(unittest.TestCase):
    def test_hand_computed(self):
        m = circc.load(lib("lib_a"))
        out = m(x=X, ids=IDS)
        np.testing.assert_array_equal(out["y"], 2 * X + 1)
        np.testing.assert_array_equal(out["g"], [30, 10, 20, 20])
        self.assertEqual(out["y"].dtype, np.float32)
        s = circc.load(lib("lib_b"))(v=[1, 2, 3, 4])["s"]
        self.assertEqual(s.shape, ())
        self.assertEqual(float(s), 30.0)

    def test_descriptors(self):
        m = circc.load(lib("lib_a"))
        self.assertEqual(m.inputs, [circc.Tensor("x", (2, 3), np.float32, False),
                                    circc.Tensor("ids", (4,), np.int64, False)])
        self.assertEqual(m.outputs, [circc.Tensor("y", (2, 3), np.float32, False),
                                     circc.Tensor("g", (4,), np.float32, False)])
        self.assertEqual(m.patches, [])
        self.assertEqual(m.info["ninputs"], 2)
        self.assertIn("--emit lib", m.info["command_line"])

    def test_conversions(self):
        m = circc.load(lib("lib_a"))
        # lists, float64, int32, a non-contiguous view, and leading 1s on either side
        out = m(x=X.astype(np.float64).T.copy().T[None], ids=np.array([[2, 0, 1, 1]], dtype=np.int32))
        np.testing.assert_array_equal(out["y"], 2 * X + 1)
        out = m(x=X.tolist(), ids=IDS.tolist())
        np.testing.assert_array_equal(out["g"], [30, 10, 20, 20])
        # a dict for names, and out= arrays written in place
        y, g = np.zeros((2, 3), np.float32), np.zeros(4, np.float32)
        res = m({"x": X, "ids": IDS}, out={"y": y, "g": g})
        self.assertIs(res["y"], y)
        np.testing.assert_array_equal(g, [30, 10, 20, 20])

    def test_threads(self):
        m = circc.load(lib("gpt2"), threads=1)
        self.assertEqual(m.threads, 1)
        ids = np.load(os.path.join(GOLD, "seq16_input_ids.npy"))
        one = m(tokens=ids)["logits"]
        m.threads = 2
        self.assertEqual(m.threads, 2)
        np.testing.assert_array_equal(m(tokens=ids)["logits"], one)   # results do not depend on threads
        m.threads = 0
        self.assertGreaterEqual(m.threads, 1)


class Gpt2Golden(unittest.TestCase):
    def test_logits_and_hidden_states(self):
        m = circc.load(lib("gpt2"))
        ids = np.load(os.path.join(GOLD, "seq16_input_ids.npy"))       # [1, 16]: the circuit takes [16]
        out = m(tokens=ids)
        names = ["logits"] + [f"hidden{i}" for i in range(6)]
        self.assertEqual(sorted(out), sorted(names))
        for name in names:
            want = np.load(os.path.join(GOLD, f"seq16_{name}.npy"))[0]
            np.testing.assert_allclose(out[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


class TapsAndPatches(unittest.TestCase):
    def test_taps_and_a_patch(self):
        m = circc.load(lib("tapped"))
        ids = np.load(os.path.join(GOLD, "seq16_input_ids.npy"))
        self.assertEqual(m.patches, [circc.Tensor(HEADS, (4, 16, 32), np.float32, False)])
        taps = [t.name for t in m.outputs if t.tap]
        self.assertEqual(len(taps), m.info["ntaps"])
        self.assertIn(PROBS, taps)
        self.assertEqual(taps, [f"b{i}/a.attn_probs" for i in range(5)])
        self.assertEqual([t.name for t in m.outputs], ["logits"] + taps)
        plain = m(tokens=ids)
        np.testing.assert_allclose(plain["logits"], np.load(os.path.join(GOLD, "seq16_logits.npy"))[0],
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(plain["logits"], np.load(os.path.join(WORK, "eval_logits.npy")), rtol=1e-4, atol=1e-4)
        probs = plain[PROBS]   # [heads, query, key]: a causal softmax, = circc eval's
        np.testing.assert_allclose(probs, np.load(os.path.join(WORK, "eval_probs.npy")), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)
        self.assertTrue(np.all(np.triu(probs, 1) == 0))
        patched = m(tokens=ids, **{HEADS: np.zeros((4, 16, 32))})
        np.testing.assert_allclose(patched["logits"], np.load(os.path.join(WORK, "eval_patched.npy")),
                                   rtol=1e-4, atol=1e-4)
        self.assertGreater(np.max(np.abs(patched["logits"] - plain["logits"])), 1e-3)
        # layer 1's pattern comes before its heads: unchanged; layer 2's comes after them
        np.testing.assert_array_equal(patched[PROBS], plain[PROBS])
        self.assertGreater(np.max(np.abs(patched["b2/a.attn_probs"] - plain["b2/a.attn_probs"])), 1e-4)
        np.testing.assert_array_equal(m(tokens=ids)["logits"], plain["logits"])   # no patch again: as before
        with self.assertRaisesRegex(circc.Error, rf"patch '{HEADS}': expected shape \[4, 16, 32\], found \[16, 32\]"):
            m(tokens=ids, **{HEADS: np.zeros((16, 32))})


ALONE = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import circc
m = circc.load(sys.argv[2])
if sys.argv[3] == 'gpt2':
    out = m(tokens=np.load(sys.argv[4]))
else:
    out = m(x=np.arange(6).reshape(2, 3), ids=[2, 0, 1, 1])
np.savez(sys.argv[5], **out)
"""


class SeveralModels(unittest.TestCase):
    def alone(self, name):
        path = os.path.join(WORK, f"alone_{name}.npz")
        subprocess.run([sys.executable, "-c", ALONE, os.path.join(ROOT, "python"), lib(name), name,
                        os.path.join(GOLD, "seq16_input_ids.npy"), path], check=True)
        return dict(np.load(path))

    def test_models_and_contexts_in_one_process(self):
        want_gpt2, want_a = self.alone("gpt2"), self.alone("lib_a")
        ids = np.load(os.path.join(GOLD, "seq16_input_ids.npy"))
        g1, a, g2, b = circc.load(lib("gpt2")), circc.load(lib("lib_a")), circc.load(lib("gpt2")), circc.load(lib("lib_b"))
        g2.threads = 1
        for _ in range(2):   # interleaved, each context reusing its arena
            for g in (g1, g2):
                out = g(tokens=ids)
                for k in want_gpt2:
                    np.testing.assert_array_equal(out[k], want_gpt2[k], err_msg=k)
            out = a(x=X, ids=IDS)
            for k in want_a:
                np.testing.assert_array_equal(out[k], want_a[k], err_msg=k)
            self.assertEqual(float(b(v=[1, 1, 1, 1])["s"]), 4.0)

    def test_concurrent_contexts(self):
        ids = np.load(os.path.join(GOLD, "seq16_input_ids.npy"))
        want = circc.load(lib("gpt2"))(tokens=ids)["logits"]
        models = [circc.load(lib("gpt2"), threads=1) for _ in range(2)]
        got = [None, None]

        def work(i):
            for _ in range(3):
                got[i] = models[i](tokens=ids)["logits"]
        ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for g in got:
            np.testing.assert_array_equal(g, want)

    def test_prefix_from_the_name(self):
        self.assertEqual(circc.prefix_of(lib("2-b\u00e9.x")), "m_2_b__")   # é is two bytes
        self.assertEqual(float(circc.load(lib("2-b\u00e9.x"))(v=[0, 0, 1, 0])["s"]), 1.0)

    def test_renamed_library(self):
        path = os.path.join(WORK, "renamed.so")
        shutil.copy(lib("lib_b"), path)
        with self.assertRaisesRegex(circc.Error, "no renamed_init.*prefix="):
            circc.load(path)
        self.assertEqual(float(circc.load(path, prefix="lib_b")(v=[0, 0, 0, 2])["s"]), 4.0)


class Mistakes(unittest.TestCase):
    def setUp(self):
        self.m = circc.load(lib("lib_a"))

    def raises(self, pattern, **kw):
        with self.assertRaisesRegex(circc.Error, pattern) as cm:
            self.m(**kw)
        return cm.exception

    def test_wrong_shape(self):
        self.raises(r"input 'x': expected shape \[2, 3\], found \[3, 2\]", x=X.T, ids=IDS)
        self.raises(r"input 'ids': expected shape \[4\], found \[2, 4\]", x=X, ids=np.zeros((2, 4), int))

    def test_wrong_dtype(self):
        self.raises(r"input 'ids': expected int64 .* found float64", x=X, ids=IDS.astype(float))
        self.raises(r"input 'x': expected float32 .* found <U1", x=np.full((2, 3), "a"), ids=IDS)

    def test_unknown_and_missing(self):
        self.raises(r"unknown input or patch 'z'; inputs: x, ids; patches: \(none\)", x=X, ids=IDS, z=1)
        self.raises(r"missing input 'ids' \[4\] int64", x=X)

    def test_bad_value_from_the_library(self):
        e = self.raises(r"'g': index 3 is out of range for an axis of size 3", x=X, ids=[0, 1, 2, 3])
        self.assertEqual(e.code, 3)
        np.testing.assert_array_equal(self.m(x=X, ids=IDS)["g"], [30, 10, 20, 20])   # the context still works

    def test_bad_out_and_threads(self):
        self.raises(r"out 'y': expected a writable C-contiguous float32 array of shape \[2, 3\]",
                    x=X, ids=IDS, out={"y": np.zeros((3, 2), np.float32)})
        with self.assertRaisesRegex(circc.Error, "thread count must be from 1 to .* found -1"):
            self.m.threads = -1

    def test_not_a_library(self):
        with self.assertRaisesRegex(circc.Error, "cannot load"):
            circc.load(os.path.join(DATA, "lib_a.circ"))

    def test_closed(self):
        self.m.close()
        self.raises("closed", x=X, ids=IDS)


if __name__ == "__main__":
    build_all()
    unittest.main(argv=sys.argv[:1], verbosity=2)
