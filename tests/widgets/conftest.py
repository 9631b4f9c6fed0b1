"""Fixtures of the widget tests."""

import pytest


@pytest.fixture
def errors():
    """The messages of the error notifications napari receives during the test."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    messages: list[str] = []

    def collect(notification) -> None:
        if notification.severity == NotificationSeverity.ERROR:
            messages.append(str(notification.message))

    notification_manager.notification_ready.connect(collect)
    yield messages
    notification_manager.notification_ready.disconnect(collect)
