"""What a device can tell the firmware went wrong; policy decides what to do about it."""


class HalError(Exception):
    """A device could not do what was asked."""


class Unavailable(HalError):
    """The device is not there (unplugged, no driver, wrong name)."""


class DeviceTimeout(HalError):
    """The device did not answer in time."""


class DeviceIOError(HalError):
    """The device answered, but the exchange failed."""


class Garbled(DeviceIOError):
    """The device answered something that does not parse (line noise, another protocol)."""
