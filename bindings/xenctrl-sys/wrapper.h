/* Headers bound by xenctrl-sys. __XEN_TOOLS__ exposes domctl/sysctl. */
#include <stdint.h>
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>
#include <xenevtchn.h>
#include <xentoollog.h>
