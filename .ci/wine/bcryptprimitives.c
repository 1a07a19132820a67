/*
 * Test-only stand-in for bcryptprimitives.dll, which Wine before 8.13 lacks
 * and every Rust >= 1.78 Windows binary imports for ProcessPrng. It fills
 * the buffer from advapi32's RtlGenRandom (SystemFunction036), which Wine
 * has. Built and copied into the private WINEPREFIX by .ci/wine/run.sh;
 * never shipped.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
	while (len > 0) {
		ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		len -= chunk;
	}
	return TRUE;
}
