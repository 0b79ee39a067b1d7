"""Geometry helpers: a real file for `speclsp demo` (its structure repeats, as code does)."""

import math
from dataclasses import dataclass


@dataclass
class Circle:
    radius: float

    def area(self):
        return math.pi * self.radius ** 2

    def perimeter(self):
        return 2 * math.pi * self.radius

    def scaled(self, factor: float) -> "Circle":
        return Circle(self.radius * factor)


@dataclass
class Rectangle:
    width: float
    height: float

    def area(self):
        return self.width * self.height

    def perimeter(self):
        return 2 * (self.width + self.height)

    def scaled(self, factor: float) -> "Rectangle":
        return Rectangle(self.width * factor, self.height * factor)


@dataclass
class Square:
    side: float

    def area(self):
