"""Dhan's error contract: one exception type carrying the code, so every failure
path ends in the same `{errorType, errorCode, errorMessage}` body and HTTP status."""
from __future__ import annotations

# Dhan's codes -> (HTTP status, errorType) as the live API answers them.
ERROR_STATUS: dict[str, tuple[int, str]] = {
    "DH-901": (401, "Invalid_Authentication"),
    "DH-902": (403, "Invalid_Access"),
    "DH-903": (403, "User_Account"),
    "DH-904": (429, "Rate_Limit"),
    "DH-905": (400, "Input_Exception"),
    "DH-906": (400, "Order_Error"),
    "DH-907": (400, "Data_Error"),
    "DH-908": (500, "Internal_Server_Error"),
    "DH-909": (503, "Network_Error"),
    "DH-910": (400, "Others"),
}


class DhanError(Exception):
    """A request the broker refuses; rendered as the contract's error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        if code not in ERROR_STATUS:
            code = "DH-910"
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return ERROR_STATUS[self.code][0]

    def body(self) -> dict[str, str]:
        return {"errorType": ERROR_STATUS[self.code][1], "errorCode": self.code, "errorMessage": self.message}


def input_error(field: str, problem: str) -> DhanError:
    """DH-905 naming the offending field, so a client can see what to fix."""
    return DhanError("DH-905", f"{field}: {problem}")


def order_error(message: str) -> DhanError:
    return DhanError("DH-906", message)
