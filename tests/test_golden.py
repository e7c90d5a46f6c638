"""Golden outputs: the SHA-256 of every output's decoded pixels for a fixed set of inputs, seeds and configs.

Any change to an output byte fails here.  Such a change must come with a bump of
``synth/spec.FORMAT_VERSION`` (recorded in every dataset.json) and regenerated pins:

    python tests/test_golden.py --regenerate

which refuses to rewrite changed pins unless FORMAT_VERSION was bumped.  The
same pins are checked on every path the reproducibility contract covers
(ARCHITECTURE.md, "Reproducibility"): this process (the widest build of the
model's library this CPU runs), in subprocesses capped to the library's AVX2 and
baseline builds and with numpy's SIMD dispatch limited to its baseline, and the
GPU kernels' bodies through the CuPy driver on the stand-in CuPy
(tests/stand_in_cupy.py).  scripts/gpu_check.py checks the same pins on a real
GPU (``python tests/test_golden.py --check --backend cupy``).  tests/model_cases.py
holds the wider case table.

Adding a case is one line in tests/model_cases.py's CASES (then --regenerate both files).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEED = 20261130
# The one case table of the model (tests/model_cases.py): (config overrides, steps; None is the one-shot image).
from model_cases import CASES  # noqa: E402

CUDA_MODELS = ("none", "poisson-gaussian", "poisson", "gaussian", "brooks")  # what the CUDA kernels render

# ---- pins: written by --regenerate -------------------------------------------------------------
PINNED_FORMAT_VERSION = 2
GOLDEN = {
    "before-linear/photo/tNone/clean": "ad406715a8f5cf4938734a39a2eeb97b5e60297636a265ed0102bdfd72fd2e91",
    "before-linear/photo/tNone/noisy": "d777f2e9a01daa51574a104fae99c00581f073888691afd8bd18f6d0b9a63d1b",
    "before-linear/ramp/tNone/clean": "de5d4ac4507dd1c59ac8955855a6b1b8161f4a2c8bc101068686bf57f938b295",
    "before-linear/ramp/tNone/noisy": "def116db3431db3de6b2ae3f63c44afcc48f3d6f72625c82e47fabb76ff0817c",
    "before/photo/tNone/clean": "3342afb1617d6236895a815efbe899595680ad26768b93d5480518faf2d87ef4",
    "before/photo/tNone/noisy": "72514ba622f6260fa94c8c8953fc91783bac1380b675863783e994d3444d2f60",
    "before/ramp/tNone/clean": "e4c8edfe6b59ec2958b59b68439dc44f3b9048d9a64e0ae553318bf4d1388b61",
    "before/ramp/tNone/noisy": "966b3eeea3fbb7f369da62f2517d81804a69dd98ad45b5a3f721842c5a54e73a",
    "brooks/photo/tNone/clean": "e6d4c548edec17f91309ba32d34b47dcde46d63a5a77eca48c852571e279fe6b",
    "brooks/photo/tNone/noisy": "0abc3ef4ff3f68037f4f294fabe40f542b208fc5502bf3d11916c47f9dd1cdbd",
    "brooks/ramp/tNone/clean": "f2ae35f207a6ba399bc35d41bc0e39db66bfbf14b5d1bd503ad0415d9164bef2",
    "brooks/ramp/tNone/noisy": "305d9d9d285e9fbf14d71484dc40dc40c015c1028a70f3c34e57eb84a3d06ccc",
    "gaussian-before-linear/photo/tNone/clean": "42183c0ff04a5cbbafb5ab7e20f709c0d30f8c6e0a28670e57f39dff42eb0c1f",
    "gaussian-before-linear/photo/tNone/noisy": "967a9ca4887621d7ad8dd4344577fb286d83a37a8c74e7186b384d91a20b4d45",
    "gaussian-before-linear/ramp/tNone/clean": "6b9431463be215f2a35caf1e8da583b63009c7f702420a647295d221bab04556",
    "gaussian-before-linear/ramp/tNone/noisy": "4942524497260cb8dca8a91f319fc2c6b9858c1b75bf09fc7c3e98caf1cc23d8",
    "gaussian/photo/tNone/clean": "7fa557578884424e149d8a4acd8eceeb93041db2f86557a4c0fc12bd9034f962",
    "gaussian/photo/tNone/noisy": "5f875ba92b12624e2c0218837ec146cfb2504a30cd826f3fe576194a94b64f4d",
    "gaussian/ramp/tNone/clean": "d4e39870edeba6800fdaf93db828d4d9a85b403719202c4c53011751decbd183",
    "gaussian/ramp/tNone/noisy": "06f39dcb9a869afb68dd4391539e09764a1c481d23bcc6e5a9b481a716ac9f55",
    "linear/photo/tNone/clean": "ad4ae6a87275f0eed6ebdf58688b538b5804a134a744c053dedec2e97187a2ea",
    "linear/photo/tNone/noisy": "405adb0a0b65e75f5bd49ddbd640c63f8cfee6f46b3f6efec8e423aa59bae028",
    "linear/ramp/tNone/clean": "e6cd096177687e808b3c6686cf059e4e7a79cf1f41a56e37c7c565ff87d22e3f",
    "linear/ramp/tNone/noisy": "d971bc1c87281cbb9dd3a05628f1aadf55bc7618f1ff443ce2bce850dc3e8a12",
    "none/photo/tNone/clean": "dadb17d7a1a3c72d02cad8c9dd02be0c8f4ac6ead5eff28b0806313016f95565",
    "none/photo/tNone/noisy": "dadb17d7a1a3c72d02cad8c9dd02be0c8f4ac6ead5eff28b0806313016f95565",
    "none/ramp/tNone/clean": "db6ed80e5b6551c1aa739d5f17db0d0708950d4fa5d5caf4c81bb737454e1637",
    "none/ramp/tNone/noisy": "db6ed80e5b6551c1aa739d5f17db0d0708950d4fa5d5caf4c81bb737454e1637",
    "normal-approximation/photo/tNone/clean": "7ea88e81c168bda20814a0b92160816b9ae61f7b6c58cdc0145ad6bcd282bf99",
    "normal-approximation/photo/tNone/noisy": "d92044563bf07285dd56e8eae19c06a725ce4c0d9c18f8538498d28d0b6ab85c",
    "normal-approximation/ramp/tNone/clean": "975264cedc299ed175dcf6064ef203712fbdcd1b9b3cb00db480071ba5931a89",
    "normal-approximation/ramp/tNone/noisy": "5bb19e5e24094b59b5d14bc6764ac03d17a86626a3b12acc0155d6a3e351ae4a",
    "params/before-linear/photo": "4f6742291525cc1b0dcbc2a7e18fc2012b44ab850d53405569bd61e7bd6b3c50",
    "params/before-linear/ramp": "47d5b1888973cbd614ba6d73f47c0cb0b9961b1f51e0a98dc35c4f383618ea30",
    "params/before/photo": "929aa284f93dfc84e8e7a76715d486dec11b02a61d0b0d4c2f37774ef46389b6",
    "params/before/ramp": "5d833ed118557efd92689dfaca12f4401e165a4fffeab0ee3cea4e1cf243a393",
    "params/brooks/photo": "7597ecc983ba3458e439c894bb11e60b19d7fd27731e3192ded00f389eb92799",
    "params/brooks/ramp": "8dd6f6a29084e8ed1eef361ed3f3b623e43e09598c90505d67996a5396c5a16a",
    "params/gaussian-before-linear/photo": "db7e10ad572e9cf9a757436fd37723fdb6544790cff7c90fb418aca5e334556b",
    "params/gaussian-before-linear/ramp": "06994c92e590c6ab4b9c95d5b984e016f003794e7f740af22953beb45f227e1a",
    "params/gaussian/photo": "c722233a21e398e3f8e183802bbce6b4b5f01743ee3aa6ce757cd7fb1334066c",
    "params/gaussian/ramp": "2b9d777606b8e480f97af6b76ad34163ccbf6b8509cc2e8cc8bf7de46e9dad14",
    "params/linear/photo": "ed04157466633057f294e5e2f5038055c4da3e7606cf12483c89772b84a52061",
    "params/linear/ramp": "2059f6a0413a655b1a3d981f4094e8a3261abf0a454919adc8809033ab84e297",
    "params/none/photo": "0394a2f70329ebaa51bd4bf82853e5a06c23ccd31f82f418761bf0d19519a301",
    "params/none/ramp": "da5e1183ce799cfd8f1c98dd5b5f6773d44da8b89530d74c9cf2f0d97eba1a06",
    "params/normal-approximation/photo": "4db3b276f930c3c7f10121e8d8608e8cdb0527bd69511bfd32a5a78713b55055",
    "params/normal-approximation/ramp": "b801cb9080308e4849b9c0d068af21f7abdfb456ece4d5863e1e20519fb23d18",
    "params/physics-canon-isp-only/photo": "33cc270350e7aeeb25c9e78d653c36ed6271939dfee3e435fea5f795008e4fe2",
    "params/physics-canon-isp-only/ramp": "ec40b1afdfa3bdfabc00dc19c11a3e3082cf4d81f6cf6afb5ba5787a939d407f",
    "params/physics-imx686-normal-approximation/photo": "7c15062de456a91d7038a88955b71f4db6f8f799a8f6c24d12fec21acefe5d8e",
    "params/physics-imx686-normal-approximation/ramp": "d32682ea3f017050e881e48106b821db286760b2c5076e5457398f697de64311",
    "params/physics-nikon-shot-read/photo": "ae45cda5698d8c4eb1020772311c838f7de72fcd0b5e73e06f8c1a43b4f3b3de",
    "params/physics-nikon-shot-read/ramp": "d96b08df3afc6d4cef762c715dead615a37349927c6c0e72cd643ca324ec5cb6",
    "params/physics-progressive/photo": "5feebcf90e9cff20e658b8f8ece2e87a7c11999b4d8bf491f6fc9cf799307fc6",
    "params/physics-progressive/ramp": "31262c19965dfa8b2aea7afe879e6d10097cece0060e271d7009217e46c77160",
    "params/physics-sony-high-gain/photo": "e03eb31ec56c64ad30365ecb7b9ab0f8655392683bbf3f207260d40eb6da14c7",
    "params/physics-sony-high-gain/ramp": "8a5574163b8a5040d5226b5dae6a8268a6f3cf09adce8a4f869905652c22a5aa",
    "params/physics-sony-pgrqc/photo": "71781b8011a14509a3ae2b5b9aaf79b770df7a415b0a86394e7cf2f025ce14f8",
    "params/physics-sony-pgrqc/ramp": "c3e4ea69e1735d266cc137323ee4ad866bc6dfc75b77c9adcd82ade5cc5e753c",
    "params/physics/photo": "71cf85109bce750c5e73dec999ef9771519fbd54b108aba36fdbf7e7f7d05abd",
    "params/physics/ramp": "36a8a6a2dbd2b95a2e62e026ade1ce065234987f9e8f37ca4d8b070c733d4119",
    "params/poisson-gaussian/photo": "6b1b92bfbf6128857962644d19135c665a395e2d7b353b8b74919f24b69761a5",
    "params/poisson-gaussian/ramp": "a9dc191f3c4dd0decd01a99b46d093dd689bf458ad7ac83b8ef624df4b0ecda2",
    "params/poisson/photo": "ca7536b461b47b3be95aae0678b3b2a09817cb2242d89bd19269158da467594d",
    "params/poisson/ramp": "5df776071193aeda520343c8b53f3b6040422472d7868b51c60bc8077138e2f7",
    "params/progressive-before-linear/photo": "ab28dc4e7e04ec8052c12dd663699bafeffc494e32510200fbfa2e086da70212",
    "params/progressive-before-linear/ramp": "815503ac7aff01fd31d6bd805404eaf38d281954e9a6ea6ccccec6457ce06c1a",
    "params/progressive/photo": "75287124030f0989d1e7cc6302dd331c8b13a7565b4c69a5516cb2d42670313f",
    "params/progressive/ramp": "a77230420019896a433680d8b3dcc3332ddfc16ae7c25535c767b6b3f30f2c53",
    "params/tiny-peak/photo": "6a18d7f56dbfd6f818f2a5eaf0eb744f9ec5f018e1421e1835c928644fca3fb9",
    "params/tiny-peak/ramp": "b9de6a6ea29458d6341c9ddd604d4c696fa08a6195b45dddee674992c3f6f2a5",
    "physics-canon-isp-only/photo/tNone/clean": "490a7fdc5864837ad49d22cdf7e4d3a84017ba44a3c93c31fff497b326ce7d2a",
    "physics-canon-isp-only/photo/tNone/noisy": "fe7352bcbee850a84561b96173730c0292dc40e197ebddd6fb36846066ab5549",
    "physics-canon-isp-only/ramp/tNone/clean": "1ca4dac2461e9273f1060a234c8a29a3f65b79245f447b8b7e5789ce189a8151",
    "physics-canon-isp-only/ramp/tNone/noisy": "d2fb6fe8b3e77fa07b1d395fa4ef4c4d11da3189b6205e46703440dd5356046c",
    "physics-imx686-normal-approximation/photo/tNone/clean": "9acc53b74a33e6e45062bf2d6ce31de0075953302d5dd815af8252cf97974968",
    "physics-imx686-normal-approximation/photo/tNone/noisy": "2821fd5e4c1dcfb4f71a5e1e62cb92f7ea37738a9f7950b7c4afb08080a8b92b",
    "physics-imx686-normal-approximation/ramp/tNone/clean": "4a78ad987a3f82b5af73493f80bf208561e97bd7b047c227e9cc033c3a8472a2",
    "physics-imx686-normal-approximation/ramp/tNone/noisy": "7d09962611a7bba87b17e48e08f586e5cf7c42b84492883c8c6044c3e4ad38ae",
    "physics-nikon-shot-read/photo/tNone/clean": "90048b87f20ae97488fb104c57ed3093a2a7c00335672110148d80dbbc87ec93",
    "physics-nikon-shot-read/photo/tNone/noisy": "79206e0c3c37555bd6c8b9253ccedb87186da87568b75ffbc1446bff3a2410f8",
    "physics-nikon-shot-read/ramp/tNone/clean": "d4aeab0a919e79b02ad6e985f30f6a0762607afcf9dfc427c730cb91d67fc083",
    "physics-nikon-shot-read/ramp/tNone/noisy": "3ad67bcbeee05fc462b3eefc0351ba88526de9a750f4533b4f0a0dce487a772c",
    "physics-progressive/photo/t1/clean": "00690dde8e606c42fc076ff21953fcd5eefeb4fe18189977ef8694d9c12f88ca",
    "physics-progressive/photo/t1/noisy": "ed78f04c8ab208f70fd54eb825c16d33ee0903fd8daaa43cb8680eca333abe9e",
    "physics-progressive/photo/t2/clean": "91292e1a25417bef1077567ef42a27cc9c8206ff9f2fb2ed68ee3a724abb00e2",
    "physics-progressive/photo/t2/noisy": "bfc27a1772441a1d84f6aeb221a496b467f7995fcf22ff5f6aaa3e0a7a05a521",
    "physics-progressive/photo/t3/clean": "05cd73a59b7f80296bdcd9f74ab7655de7ace18cb7e06165ef94060b670ad6da",
    "physics-progressive/photo/t3/noisy": "6869c781f3d26592ab3d05604752979645bf7afb77dba2186af692a2c6abf795",
    "physics-progressive/ramp/t1/clean": "969e61084d365bbf0ece769df76b7430fde87ee9ec340ee0b8e873adad9f4fbb",
    "physics-progressive/ramp/t1/noisy": "c631b444e54029343cc5ea718217b9e601dba510da743e4326439f052bdc7986",
    "physics-progressive/ramp/t2/clean": "8cf1278ad4eef28f43d214ebe5ed8e385133073c9a1e995f833a49a51a2e98a4",
    "physics-progressive/ramp/t2/noisy": "2f318b80d035bac19a862d6eb40a78bd35a6e08ed73ed27835d0f83d3c5ff542",
    "physics-progressive/ramp/t3/clean": "4e358511f58b9c34038e19b0d967f219bcb4b214841a2b1c20037cfc2ee459a1",
    "physics-progressive/ramp/t3/noisy": "9865b0a295e6f01780a267999ee87108fc23845a80814307a3810bc46c8e2638",
    "physics-sony-high-gain/photo/tNone/clean": "6a9744026941e2a1552c708c2b88f517811501d37b100b82d6db7f0396dec340",
    "physics-sony-high-gain/photo/tNone/noisy": "7ce5851c6ae91a5e7af84171f6910b69dee69339286878f2b8fcc4ed791653bc",
    "physics-sony-high-gain/ramp/tNone/clean": "c25ce28d6eb77a337a6150b5f7c06e1c0a911c0bea40c7565ab9ef58bb2209c6",
    "physics-sony-high-gain/ramp/tNone/noisy": "5a2492c0e722b91a712356be31a30ec745220e3ba0573f23bfc1469c84b2ccbb",
    "physics-sony-pgrqc/photo/tNone/clean": "c073c0143e575b10ddd2df4228dc1c6f60046a57a1c0cab36e23b5da34339025",
    "physics-sony-pgrqc/photo/tNone/noisy": "bd5fc1f51341cab95f913457b26e271ecefd2c5881e2e2885f5303852daaa052",
    "physics-sony-pgrqc/ramp/tNone/clean": "ca25147a8497bdc1add58cf98f9ddeeeaceb815d8ed1ad9d6f309891b286d468",
    "physics-sony-pgrqc/ramp/tNone/noisy": "71cc6035dcca0aacd686da24b0ec3519f35a63d6d624def5676fcb02f17afc6d",
    "physics/photo/tNone/clean": "a486de1729d10b35616418f42ad1d5ef619d90694fef756166fd49648883ab0b",
    "physics/photo/tNone/noisy": "f0e1124e0cc8c7a1fde81668cd771decdf86d4ad76353e1d651b75b7ce6721ea",
    "physics/ramp/tNone/clean": "f585be492ebcacb99c24921ba14fb5de3e971f5d2b82c9c85fb9483a935625fc",
    "physics/ramp/tNone/noisy": "4582cbc63092fef57e45253d2404197a19bfce1d241f2bea8e6d03bc879a680f",
    "pipeline/high/alpha.png": "6e4056c7631fa6ff20e2c7fc2f102dfa402f7285963567cb36371609fea02eed",
    "pipeline/high/grey.png": "0a380a45ede5295facf7339ddebb925008cbd8157d11bf43a47ffe2e61633db7",
    "pipeline/low/t01/alpha.png": "0da542f99bb4d0781a60a961a8f48f3c652fc1d447972c9775032971529bba0c",
    "pipeline/low/t01/grey.png": "e967ac6a97fa2ac221ff1da18afd6a06454a5e6c28491567cd1a4900669c6847",
    "pipeline/low/t02/alpha.png": "f8b404513f49ffe2a88a0341e624cb32f4ade04041d41dc100b06e06bea9ba58",
    "pipeline/low/t02/grey.png": "146747996dd7760891bfafa5fa0e94c93d0a4b7cd026a4216e47f644de2c82c3",
    "pipeline/low_clean/t01/alpha.png": "1e613f87e63a947c57e699e08e88c6fc67f024b416b49024daf984e7fb85edca",
    "pipeline/low_clean/t01/grey.png": "935ae918c2f3103484cf61d6b385c77c8b2a927b8fa54ca9f00d3c9aae3f0940",
    "pipeline/low_clean/t02/alpha.png": "a0bda896e0b92dada523338f234d2b26c39c03b86003e55921e75d8774689599",
    "pipeline/low_clean/t02/grey.png": "c623bb28927bac3195742e4fd191a7e656422eb98fd1285e91c7cc698be47252",
    "poisson-gaussian/photo/tNone/clean": "486fea0c465325fa6d0ddffb494dcb5602c49ca34baf0ebf6983731716af577c",
    "poisson-gaussian/photo/tNone/noisy": "381fd2f01d9c8904f811adcc5b0d07fd2c11922c3e41b052698db698be0d0b33",
    "poisson-gaussian/ramp/tNone/clean": "2229aa0e10f138c4f818df3734de693e69ce9f5bbc04ca143944001f7c8cded5",
    "poisson-gaussian/ramp/tNone/noisy": "b62822c34ed275041beee9eaf8cd45396a7a8397030ac084b9cd2fa43ebae65f",
    "poisson/photo/tNone/clean": "7b11888da04071aab06de2c87b9347b12b714e98c27fe29bb33ca29a49726373",
    "poisson/photo/tNone/noisy": "e554fb71dfa8424e42d549d66679f45de8768369a08b06efdf3750752159e54e",
    "poisson/ramp/tNone/clean": "7bd347010dbefd6062afa8b289ae4fd4afc4c1a85b37608ee2a5f8a0d18f62be",
    "poisson/ramp/tNone/noisy": "4b19dd6d26535f9ac9fad9a985049cf9acb99eed1ea4885a709ff5d4419cd043",
    "progressive-before-linear/photo/t1/clean": "c5d7a9c85215c47bd6c8b79a49e1f063de23de879bd49fbc75d37e5c56f1df9e",
    "progressive-before-linear/photo/t1/noisy": "7ee7e2efbb3d2405b51fd7d3e572e509aea5147afee59c20b0cfce76812bf15d",
    "progressive-before-linear/photo/t2/clean": "cbdbaa0e65782fd9dc70f30e38631e6a4afc7ba18473b77efad7ecb93026206c",
    "progressive-before-linear/photo/t2/noisy": "f927d4c87b32f66e88b668445369e439cfb2406b81bd320ec596ce1d2d0e5d51",
    "progressive-before-linear/photo/t3/clean": "ce34d78a55142904fcbefb8f71a46b323ba8e9e7203404ebc38ac8aa4b506d7c",
    "progressive-before-linear/photo/t3/noisy": "3456a1c2675087d06b956ee6c5a72d3977079afe834b37ac901d548e812793c9",
    "progressive-before-linear/ramp/t1/clean": "335b82f4fe90b72fea2884696015d1d5b4261e87b33f657c24112688cd54f59d",
    "progressive-before-linear/ramp/t1/noisy": "4e4f3ac1efca30166ab2701ff4a2655a3335d44a8319c076f63ae3667f87594d",
    "progressive-before-linear/ramp/t2/clean": "d3e43789b8905dd4cefeaee1c0f298c2ea159a6eee0cdd1168e4eee18c32844c",
    "progressive-before-linear/ramp/t2/noisy": "85e2bfb6386e0b2f7a33ce23bb7f39fe13e11fdf96d4337893fac322d7bddfdd",
    "progressive-before-linear/ramp/t3/clean": "1861d3daf9345468b2393f8f4da864d228675eba9c09cb04e30cb72c3b17b744",
    "progressive-before-linear/ramp/t3/noisy": "336763791eafe69072a2459e84794106c12151c3df4e12083bcd0edec7fcf28b",
    "progressive/photo/t1/clean": "b1f87cdecdf19f0d1d9fa834299e5b6d25ef85dba908751a3f818c3b6a38f259",
    "progressive/photo/t1/noisy": "e55dedf742e34a6e65177e9896ffe43983c7327325edfdd78d09ec5c4e034149",
    "progressive/photo/t2/clean": "df3638cbe047755c368668c46432938f71686a655f23a28308c59a71552a2348",
    "progressive/photo/t2/noisy": "c4fd422011f1356912d1e45a9edbc87e870ebbac54b88fa8ee5816d62dbd8b3b",
    "progressive/photo/t3/clean": "bb7a4f1c401bf3c419a7542833651029f3066e6ad40e66c502b5ec8c2d77c5f7",
    "progressive/photo/t3/noisy": "f940d3d748972066259004da81d21eec9b83d5f7c6bef03f7127689b2e6a0755",
    "progressive/photo/t4/clean": "dd99a3ac227a986375d297a19890d25bd2ebc15b36ce6ff650eb9061ed0c1628",
    "progressive/photo/t4/noisy": "0b17ac93bf57da46197b068c822eb3c9308818d2de26a141e5a6b2fed5ab2430",
    "progressive/photo/tNone/clean": "dd99a3ac227a986375d297a19890d25bd2ebc15b36ce6ff650eb9061ed0c1628",
    "progressive/photo/tNone/noisy": "0b17ac93bf57da46197b068c822eb3c9308818d2de26a141e5a6b2fed5ab2430",
    "progressive/ramp/t1/clean": "7e3583668b7637adacbe7c097b18a3ccd95453ef6dec765075fefe898fcc0459",
    "progressive/ramp/t1/noisy": "a34f7c43e4602b723b894594697136aac78af792953686afb76098902d4128da",
    "progressive/ramp/t2/clean": "5ea24c97a1fdfa5bf44b55e5fac6239f75a5dbf8019da783934433a7a3c7502e",
    "progressive/ramp/t2/noisy": "9c2cac1bf2f9a78eb80348053fd511ec49b7cad70055bb8ac8d496d816c7dea7",
    "progressive/ramp/t3/clean": "cbfae01dd1a2f25218eb85d9c3cb09f2023146d2ff4231ef55e4cdadad6f242f",
    "progressive/ramp/t3/noisy": "a1faad150c36c96b366e6fa3d1dd7fab7e7f123d1b55e3b385cae31d5b29c50e",
    "progressive/ramp/t4/clean": "fc4fc5b4276132a0c65b9fb07b8453134444e4ef7f53a017a60a7cd30e723cbc",
    "progressive/ramp/t4/noisy": "aac4029687e0e6c0c9f51af9628ea180665a88f07c09a591dddda9af586cb0e1",
    "progressive/ramp/tNone/clean": "fc4fc5b4276132a0c65b9fb07b8453134444e4ef7f53a017a60a7cd30e723cbc",
    "progressive/ramp/tNone/noisy": "aac4029687e0e6c0c9f51af9628ea180665a88f07c09a591dddda9af586cb0e1",
    "tiny-peak/photo/tNone/clean": "ec34f03ba43c00fdc16daa6c34b7983df267f973dc6cb30a1ac10ceae45de52d",
    "tiny-peak/photo/tNone/noisy": "68cfb4ffbc79b0fc60072856cb548aad9abfbc67f8bc7aeb515c2abcd2fc9eda",
    "tiny-peak/ramp/tNone/clean": "764d11d6c76fa8ff40ef3277a6969897dbf2fb6a253ba4ddf9314aa867229614",
    "tiny-peak/ramp/tNone/noisy": "c403e646475c4633e4d2d551015d47b79488931d9d2811d3bdd8da87ce6227de",
}
# ---- end of pins ----------------------------------------------------------------------------


_IMAGES = {}


def input_images():
    """{name: uint8 (H, W, 3)}: every code in every channel, and a crop of a bundled photo (PNG: exact decode)."""
    from lowlight_gpu import imageio

    if _IMAGES:
        return _IMAGES
    i = np.arange(256, dtype=np.int64)
    ramp = np.stack([i, 255 - i, (i * 7) % 256], axis=1).astype(np.uint8).reshape(16, 16, 3)
    photo = imageio.decode(str(REPO / "samples" / "astronaut.png"), 10 ** 8).rgb[96:137, 200:247]
    _IMAGES.update(ramp=ramp, photo=np.ascontiguousarray(photo))
    return _IMAGES


def digest(*arrays):
    """SHA-256 of the shapes and bytes of uint8 arrays."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.uint8)
        h.update(repr(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def case_model(case):
    """The noise model a case configures."""
    from lowlight_gpu.config import config_from_dict

    return config_from_dict(CASES[case][0]).noise.model


def render_hashes(backend, cases=None):
    """{output name: hash} of every case on every input image, rendered by the backend module."""
    from lowlight_gpu.config import config_from_dict
    from lowlight_gpu.hashing import pair_seed
    from lowlight_gpu.params import sample_params

    out = {}
    for case in cases or CASES:
        overrides, steps = CASES[case]
        config = config_from_dict(overrides)
        for image, rgb in input_images().items():
            params = sample_params(pair_seed(SEED, f"{case}/{image}"), config)
            out[f"params/{case}/{image}"] = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
            specs = [(t, noisy) for t in steps for noisy in (True, False)]
            for (t, noisy), low in zip(specs, backend.render_many(rgb, params, specs)):
                out[f"{case}/{image}/t{t}/{'noisy' if noisy else 'clean'}"] = digest(low)
    return out


def pipeline_hashes(backend_name="numpy"):
    """{output path: hash} of a tiny pipeline run: an RGBA PNG (alpha kept), a greyscale PNG, progressive steps."""
    from PIL import Image

    from lowlight_gpu import imageio, pipeline
    from lowlight_gpu.config import config_from_dict

    gen = np.random.default_rng(SEED)  # integers only: the same on every machine
    tmp = Path(tempfile.mkdtemp(prefix="golden-"))
    try:
        (tmp / "in").mkdir()
        Image.fromarray(gen.integers(0, 256, (13, 11, 4), dtype=np.uint8), "RGBA").save(tmp / "in" / "alpha.png")
        Image.fromarray(gen.integers(0, 256, (9, 14), dtype=np.uint8), "L").save(tmp / "in" / "grey.png")
        config = config_from_dict({"input": str(tmp / "in"), "output": str(tmp / "out"), "seed": SEED,
                                   "workers": 1, "backend": backend_name, "save": {"clean_low": True},
                                   "progressive": {"enabled": True, "steps": 2, "save": "all"}})
        result = pipeline.run(config)
        assert result.pairs == 2 and result.errors == 0, result
        out = {}
        for path in sorted((tmp / "out").rglob("*.png")):
            rel = path.relative_to(tmp / "out").as_posix()
            decoded = imageio.decode(str(path), 10 ** 8)
            out[f"pipeline/{rel}"] = digest(decoded.rgb, *([] if decoded.alpha is None else [decoded.alpha]))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def all_hashes(backend_name="numpy", cases=None):
    """Every golden hash this process computes with the named backend."""
    from lowlight_gpu import synth

    return {**render_hashes(synth.get(backend_name), cases), **pipeline_hashes(backend_name)}


def compare(got, partial=False):
    """Lines describing how got differs from the pins (empty when equal); partial: got covers a subset."""
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    lines = []
    if FORMAT_VERSION != PINNED_FORMAT_VERSION:
        lines.append(f"synth/spec.FORMAT_VERSION is {FORMAT_VERSION} but the pins are for {PINNED_FORMAT_VERSION}: "
                     "run python tests/test_golden.py --regenerate")
    diffs = [f"{name}: {got.get(name, 'missing')} != pinned {pin}" for name, pin in sorted(GOLDEN.items())
             if got.get(name) != pin and (name in got or not partial)]
    diffs += [f"{name}: not pinned (run python tests/test_golden.py --regenerate)" for name in sorted(got)
              if name not in GOLDEN]
    if diffs and FORMAT_VERSION == PINNED_FORMAT_VERSION:
        diffs.append("output bytes changed: bump synth/spec.FORMAT_VERSION, then run "
                     "python tests/test_golden.py --regenerate")
    return lines + diffs


# ---------------------------------------------------------------- the paths of the contract

def simd_limits():
    """{variant: NPY_DISABLE_CPU_FEATURES value} for numpy's AVX2 and baseline dispatch paths on this CPU."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    have = [f for f in getattr(umath, "__cpu_dispatch__", []) if umath.__cpu_features__.get(f)]
    avx512 = [f for f in have if "512" in f or f == "X86_V4"]
    out = {}
    if avx512:
        out["avx2"] = ",".join(avx512)  # leaves the AVX2 group (X86_V3, or AVX2/FMA3 on older numpy)
    if have and set(have) != set(avx512):
        out["baseline"] = ",".join(have)
    return out


def variant_env(level, simd):
    """The environment of one subprocess variant: the library's build capped to a level, numpy's SIMD limited."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOWLIGHT_CPU_LEVEL", "NPY_DISABLE_CPU_FEATURES")}
    if level is not None:
        env["LOWLIGHT_CPU_LEVEL"] = str(level)
    if simd:
        env["NPY_DISABLE_CPU_FEATURES"] = simd_limits()[simd]
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def hashes_in_subprocess(level, simd):
    """all_hashes() computed by a fresh interpreter under a variant's environment."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--print"], env=variant_env(level, simd),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- tests

def test_pins_match_the_format_version():
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    assert GOLDEN, "no pins: run python tests/test_golden.py --regenerate"
    assert PINNED_FORMAT_VERSION == FORMAT_VERSION, compare({})[0]
    assert {n.split("/")[1] for n in GOLDEN if not n.startswith(("params/", "pipeline/"))} == {"ramp", "photo"}
    assert {n.split("/")[0] for n in GOLDEN} >= set(CASES)


def test_golden_in_this_process():
    """The widest build of the model's library this CPU runs."""
    problems = compare(all_hashes())
    assert not problems, "\n".join(problems)


def test_golden_everywhere_else():
    """The library's baseline and AVX2 builds, and numpy limited to its baseline SIMD path."""
    baseline = "baseline" if "baseline" in simd_limits() else None
    for level, simd in ((0, baseline), (3, None)):
        problems = compare(hashes_in_subprocess(level, simd))
        assert not problems, f"LOWLIGHT_CPU_LEVEL={level} SIMD={simd}:\n" + "\n".join(problems)


def test_golden_on_the_gpu_kernel_bodies(stand_in):
    """The GPU kernels' bodies (run serially by the library) through the CuPy backend's driver, physics too."""
    from lowlight_gpu.synth import cupy_backend

    got = {**render_hashes(cupy_backend), **pipeline_hashes("cupy")}
    problems = compare(got, partial=True)
    assert not problems, "\n".join(problems)
    assert len(got) == len(GOLDEN)


def generate(args, tmp, level=None, simd=None):
    """python generate.py ARGS in a fresh interpreter under a variant's environment; returns (exit code, output)."""
    proc = subprocess.run([sys.executable, str(REPO / "generate.py"), *args], cwd=tmp, capture_output=True,
                          text=True, timeout=300, env=variant_env(level, simd))
    return proc.returncode, proc.stdout + proc.stderr


def test_datasets_verify_exactly_across_cpu_builds(tmp_path, capsys):
    """The contract's test: made here, verified with the library's baseline build and numpy's baseline SIMD path;
    and the reverse."""
    from PIL import Image

    from lowlight_gpu import cli
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    gen = np.random.default_rng(SEED)
    (tmp_path / "in").mkdir()
    Image.fromarray(gen.integers(0, 256, (23, 37, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(gen.integers(0, 256, (17, 19, 4), dtype=np.uint8), "RGBA").save(tmp_path / "in" / "b.png")
    common = ["--set", f"input={tmp_path / 'in'}", "--set", "workers=1", "--set", "backend=numpy",
              "--set", "progressive.enabled=true", "--set", "progressive.steps=2", "--set", "progressive.save=all",
              "--quiet"]
    simd = "baseline" if "baseline" in simd_limits() else None
    # Made here (the widest build), verified by the baseline builds.
    assert cli.main([*common, "--set", f"output={tmp_path / 'a'}"]) == 0
    code, out = generate([*common, "--set", f"output={tmp_path / 'a'}", "--verify"], tmp_path, 0, simd)
    assert code == 0 and "all match" in out, out
    rows = [json.loads(line) for line in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert {r["backend"] for r in rows} == {"numpy"}
    assert json.loads((tmp_path / "a" / "dataset.json").read_text())["format_version"] == FORMAT_VERSION
    # Made by the baseline builds, verified here.
    code, out = generate([*common, "--set", f"output={tmp_path / 'b'}"], tmp_path, 0, simd)
    assert code == 0, out
    capsys.readouterr()
    assert cli.main([*common, "--set", f"output={tmp_path / 'b'}", "--verify"]) == 0
    assert "all match" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()]
    assert {r["backend"] for r in rows} == {"numpy"}


def test_a_dataset_of_another_format_version_is_not_extended(tmp_path):
    """Its images were rendered by another revision of the model: a rerun into it exits 2 and writes nothing."""
    from PIL import Image

    from lowlight_gpu import cli
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((5, 7, 3), 90, np.uint8)).save(tmp_path / "in" / "a.png")
    args = ["--set", f"input={tmp_path / 'in'}", "--set", f"output={tmp_path / 'out'}", "--set", "workers=1",
            "--set", "backend=numpy", "--quiet"]
    assert cli.main(args) == 0
    run_json = tmp_path / "out" / "parts" / "run.json"
    body = json.loads(run_json.read_text())
    assert body["format_version"] == FORMAT_VERSION
    del body["format_version"]  # as a run.json of format version 1, which did not record it
    run_json.write_text(json.dumps(body))
    Image.fromarray(np.full((5, 7, 3), 30, np.uint8)).save(tmp_path / "in" / "b.png")
    assert cli.main(args) == 2
    assert not (tmp_path / "out" / "low" / "b.png").exists()


# ---------------------------------------------------------------- regeneration

def regenerate():
    """Rewrite PINNED_FORMAT_VERSION and GOLDEN in this file; refuse changed pins without a version bump."""
    from lowlight_gpu.synth.spec import FORMAT_VERSION

    got = all_hashes()
    changed = sorted(n for n in got if GOLDEN.get(n) not in (None, got[n]))
    if changed and FORMAT_VERSION == PINNED_FORMAT_VERSION:
        sys.exit(f"{len(changed)} outputs changed (first: {changed[0]}); bump synth/spec.FORMAT_VERSION first")
    body = "".join(f'    "{name}": "{value}",\n' for name, value in sorted(got.items()))
    pins = f"PINNED_FORMAT_VERSION = {FORMAT_VERSION}\nGOLDEN = {{\n{body}}}\n"
    path = Path(__file__).resolve()
    text = path.read_text()
    new = re.sub(r"PINNED_FORMAT_VERSION = .*?\n(?=# ---- end of pins)", pins, text, count=1, flags=re.S)
    path.write_text(new)
    print(f"pinned {len(got)} outputs for format version {FORMAT_VERSION} ({len(changed)} changed)")


def main():
    """--regenerate, --print (hashes as JSON) or --check [--backend cupy] (exit 1 on any difference)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--print", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    args = ap.parse_args()
    if args.regenerate:
        return regenerate()
    # On a real GPU cupy_backend renders physics too (physics_gpu); the stand-in test covers it separately.
    cases = [c for c in CASES if case_model(c) in CUDA_MODELS + ("physics",)] if args.backend == "cupy" else None
    got = all_hashes(args.backend, cases)
    if args.print:
        print(json.dumps(got))
        return None
    problems = compare(got, partial=args.backend == "cupy")
    print("\n".join(problems) or f"golden: all {len(got)} outputs match the pins (format version "
                                   f"{PINNED_FORMAT_VERSION}, backend {args.backend})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
