from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.urls import reverse

from .permissions import is_superadmin


def landing_url(user) -> str:
    """Where a user goes after logging in or changing a password."""
    if is_superadmin(user):
        return reverse("failsafe:terminal")
    if user.is_staff:
        return reverse("admin:index")
    return reverse("accounts:password_change")


def home(request):
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return redirect(landing_url(request.user))


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"

    def form_valid(self, form):
        response = super().form_valid(form)
        user = form.user
        if user.must_change_password:
            user.must_change_password = False
            user.save(update_fields=["must_change_password"])
        messages.success(self.request, "Your password was changed.")
        return response

    def get_success_url(self):
        return landing_url(self.request.user)
