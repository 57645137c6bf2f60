"""The Dhan adapter: the only code that knows Dhan's field names, letter codes and error codes,
and the only code that imports `dhanhq`. Everything past it speaks `trading.orders` types."""
