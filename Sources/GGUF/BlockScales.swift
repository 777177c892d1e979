/// MXFP4's block scale: the E8M0 exponent byte e as 2^(e-128), half of the format's 2^(e-127),
/// because the E2M1 element values are tabulated doubled (so they are integers). e = 0 and 1
/// give the subnormals 2^-128 and 2^-127.
@inlinable @inline(__always)
public func mxfp4HalfScale(_ e: UInt8) -> Float {
    Float(bitPattern: e < 2 ? UInt32(0x0020_0000) << UInt32(e) : UInt32(e - 1) << 23)
}
