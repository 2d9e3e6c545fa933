"""benchmarks name the CPU they ran on: cpu_description() from /proc/cpuinfo text."""
from edgepack.runtime.benchmark import cpu_description

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512bw avx512_vnni amx_int8
processor\t: 1
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512bw avx512_vnni amx_int8
"""
EPYC = "processor : 0\nmodel : 49\nmodel name : AMD EPYC 7B12\nflags : fpu avx2 fma\n"
PI5 = ("processor : 0\nFeatures : fp asimd asimdhp asimddp\nCPU part : 0xd0b\n"
       "processor : 1\nFeatures : fp asimd asimdhp asimddp\n"
       "Model : Raspberry Pi 5 Model B Rev 1.0\n")


def test_x86_model_name_wins_over_the_numeric_model_and_features_are_listed():
    assert cpu_description(X86) == ("Intel(R) Xeon(R) Platinum 8480+, 2 cores, int8 features: "
                                    "avx2, avx512bw, avx512_vnni, amx_int8")


def test_an_avx2_only_host_says_it_has_no_vnni():
    assert cpu_description(EPYC) == "AMD EPYC 7B12, 1 cores, int8 features: avx2"


def test_a_raspberry_pi_is_named_by_its_model_line():
    assert cpu_description(PI5) == ("Raspberry Pi 5 Model B Rev 1.0, 2 cores, int8 features: "
                                    "asimddp, asimdhp")
