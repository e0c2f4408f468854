"""The Django user behind a web request, in the journal rows its changes write."""

from pghistory.middleware import HistoryMiddleware


class JournalMiddleware(HistoryMiddleware):
    def get_context(self, request):
        context = super().get_context(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # By name as well as by pk: the journal outlives a deleted account.
            context["username"] = user.get_username()
        return context
