from django.urls import path

from . import views

app_name = "failsafe"

urlpatterns = [
    path("terminal/", views.terminal, name="terminal"),
]
