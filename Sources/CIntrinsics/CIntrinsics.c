// The module is the header alone (include/CIntrinsics.h); SwiftPM wants one source file.
#include "CIntrinsics.h"
