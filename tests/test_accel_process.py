import platform

import pytest

from c2fnas.accel.process import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_allocator_accepts_the_settings():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # a second call is a no-op (cached)
