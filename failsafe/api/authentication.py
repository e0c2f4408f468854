"""Who is calling the API: knox tokens first, then the browser's session."""

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox import auth as knox_auth
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed


class TokenAuthentication(knox_auth.TokenAuthentication):
    """knox's token check, refusing a token that is not ASCII with 401 instead of crashing.

    knox decodes the header as UTF-8 without catching the error, so one stray byte in an
    Authorization header would otherwise end in a server error.
    """

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


class TokenScheme(KnoxTokenScheme):
    """drf-spectacular: document our subclass as knox's `Authorization: Token <token>`."""

    target_class = "failsafe.api.authentication.TokenAuthentication"


# Tokens first, so an anonymous caller gets 401 with a WWW-Authenticate challenge.
AUTHENTICATION_CLASSES = (TokenAuthentication, SessionAuthentication)
